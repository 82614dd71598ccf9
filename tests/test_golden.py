"""Reproduce published numbers on full SciFact (slow: the dense run encodes 5,183 documents)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from uniret.commands import RetrieverConfig, run_eval

GOLDEN = yaml.safe_load((Path(__file__).parent / "golden.yaml").read_text())


@pytest.mark.slow
@pytest.mark.java
@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
def test_reproduces_published_number(case, tmp_path):
    cfg = RetrieverConfig(kind=case["retriever"], model=case.get("model", "all-MiniLM-L6-v2"),
                          max_length=case.get("max_length", 256), device="cpu")
    result = run_eval(case["data"], cfg, tmp_path / case["name"], split=case["split"], depth=1000)
    assert result.metrics[case["metric"]] == pytest.approx(case["expected"], abs=case["tolerance"])

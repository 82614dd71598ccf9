"""Crash safety of ``uniret index`` as a user runs it: ``kill -9`` in the middle of a rebuild leaves the previous
index intact and loadable, and nothing beside it that looks like a whole index; two builds into one output path at
once leave one intact index. (The atomic-directory mechanics are unit-tested in ``test_output_paths.py``; the
Java child of a killed build in ``test_bm25_robust.py``.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uniret.data import save_beir
from uniret.index import load_index

pytestmark = pytest.mark.java


@pytest.fixture(scope="module")
def data(scifact, tmp_path_factory):
    return save_beir(scifact.sample(num_queries=5, num_docs=3000, split="test", seed=2), tmp_path_factory.mktemp("d"))


def _index_cmd(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "uniret", "-q", "index", "--data", str(data), "--retriever", "bm25",
            "--output", str(out)]


def _looks_whole(parent: Path) -> list[str]:
    """Folders under ``parent`` holding a manifest (what a user or ``load_index`` would take for an index)."""
    return sorted(str(p.parent.relative_to(parent)) for p in parent.rglob("manifest.json"))


def test_kill_9_during_a_rebuild_keeps_the_previous_index(data, tmp_path):
    out = tmp_path / "idx"
    assert subprocess.run(_index_cmd(data, out), env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode == 0
    before = load_index(out).search({"q": "vitamin D bone density"}, k=5)
    manifest = (out / "manifest.json").read_bytes()

    proc = subprocess.Popen(_index_cmd(data, out), env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(".tmp-" in p.name for p in tmp_path.iterdir()):  # its scratch or staging folder: mid-build
                break
            time.sleep(0.02)
        time.sleep(0.3)
        assert proc.poll() is None, "the rebuild finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out / "manifest.json").read_bytes() == manifest
    assert load_index(out).search({"q": "vitamin D bone density"}, k=5) == before
    assert _looks_whole(tmp_path) == ["idx"], "a half-written folder carries a manifest"
    # the next build replaces the index and removes what the killed one left
    assert subprocess.run(_index_cmd(data, out), env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode == 0
    assert load_index(out).search({"q": "vitamin D bone density"}, k=5) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_two_builds_into_one_output_at_once_leave_one_intact_index(data, tmp_path):
    out = tmp_path / "idx"
    procs = [subprocess.Popen(_index_cmd(data, out), env={**os.environ, "HF_HUB_OFFLINE": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read().decode() if p.stderr else "") for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for rc, err in results:
        if rc == 2:
            assert "locked" in err  # the loser says why, and touched nothing
    idx = load_index(out)
    assert idx.num_docs == 3000 and idx.search({"q": "vitamin D"}, k=3)["q"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]

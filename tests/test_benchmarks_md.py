"""BENCHMARKS.md is what ``benchmarks/render.py`` renders from ``benchmarks/results``; labels come from the files.

Fast and offline: the renderer reads JSON only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import render  # noqa: E402


@pytest.mark.parametrize("name", ["BENCHMARKS.md", "README.md"])
def test_document_equals_what_the_results_render(name: str) -> None:
    doc = (REPO / name).read_text(encoding="utf-8")
    rendered = render.render(doc, render.RESULTS)
    assert rendered == doc, f"{name} differs from its results files: run python benchmarks/render.py"


def test_every_benchmarks_md_block_is_in_the_document() -> None:
    names = {m.group("name") for m in render.BLOCK.finditer((REPO / "BENCHMARKS.md").read_text(encoding="utf-8"))}
    assert names == {n for n in render.BLOCKS if not n.startswith("readme-")}


def _throughput(cpu: str, start: str, end: str) -> dict:
    return {"benchmark": "train_throughput", "command": "python benchmarks/train_throughput.py --steps 3",
            "started_utc": start, "finished_utc": end,
            "machine": {"system": "Linux x86_64", "cpu": cpu, "cpu_features": ["avx2", "avx512_bf16"], "cores": 7,
                        "gpu": None},
            "examples_per_s": {"sentence_transformers": 2.0, "uniret": 3.0}, "ratio_uniret_over_st": 1.5}


def test_machine_and_date_labels_come_from_the_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "train_throughput.json").write_text(
        json.dumps(_throughput("Imaginary CPU 9000", "2031-02-03T04:05:06Z", "2031-02-03T04:50:00Z")))
    legacy = {"command": "python benchmarks/encode_throughput.py", "date": "2030-01-02 03:04 UTC",
              "machine": "Linux x86_64, 3 cores, Old CPU", "documents": 10, "batch_size": 4, "max_length": 16,
              "torch_threads": 3, "rounds": 1, "docs_per_s": {"sentence_transformers": 1.0, "uniret": 2.0},
              "ratio_uniret_over_st": 2.0, "max_abs_diff": 1e-7}
    (results / "encode_throughput.json").write_text(json.dumps(legacy))
    doc = ("x\n<!-- BEGIN: train-throughput -->\nstale\n<!-- END: train-throughput -->\n"
           "<!-- BEGIN: encode-throughput -->\n<!-- END: encode-throughput -->\ny\n")
    out = render.render(doc, results)
    assert "Imaginary CPU 9000 (AVX512-BF16), 7 cores, no GPU, 2031-02-03 04:05–04:50 UTC" in out
    assert "3 cores, Old CPU, 2030-01-02 03:04 UTC (end)" in out  # an older file: its recorded line and save time
    assert "stale" not in out and out.startswith("x\n") and out.endswith("y\n")
    # the label follows the file, not the document
    (results / "train_throughput.json").write_text(
        json.dumps(_throughput("Other CPU", "2031-02-04T00:00:00Z", "2031-02-05T01:00:00Z")))
    out = render.render(doc, results)
    assert "Other CPU (AVX512-BF16), 7 cores, no GPU, 2031-02-04 00:00 – 2031-02-05 01:00 UTC" in out
    assert "Imaginary" not in out


def test_missing_file_says_how_to_produce_it(tmp_path: Path) -> None:
    out = render.render("<!-- BEGIN: dense-recipe-details -->\n<!-- END: dense-recipe-details -->\n", tmp_path)
    assert "Not measured yet" in out and "benchmarks/dense_recipe.py" in out


def test_unknown_block_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no-such-table"):
        render.render("<!-- BEGIN: no-such-table -->\n<!-- END: no-such-table -->\n", tmp_path)


def test_check_fails_with_a_diff_then_passes_after_rewrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "train_throughput.json").write_text(
        json.dumps(_throughput("Imaginary CPU 9000", "2031-02-03T04:05:06Z", "2031-02-03T04:50:00Z")))
    doc = tmp_path / "B.md"
    doc.write_text("<!-- BEGIN: train-throughput -->\n| hand typed |\n<!-- END: train-throughput -->\n")
    assert render.main(["--check", "--doc", str(doc), "--results", str(results)]) == 1
    assert "-| hand typed |" in capsys.readouterr().out
    assert render.main(["--doc", str(doc), "--results", str(results)]) == 0
    assert render.main(["--check", "--doc", str(doc), "--results", str(results)]) == 0


def test_results_record_their_provenance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import _common

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512f\n")
    assert _common.cpu_info(cpuinfo) == {"cpu": "Test CPU", "cpu_features": ["avx2", "avx512f"]}
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--flag", "a b"])
    run = _common.BenchmarkRun("x", results_dir=tmp_path)
    rec = json.loads(run.save({"value": 1}).read_text())
    assert rec["command"] == "python benchmarks/x.py --flag 'a b'"
    assert rec["started_utc"] <= rec["finished_utc"] and rec["finished_utc"].endswith("Z")
    assert set(rec["machine"]) >= {"cpu", "cores", "gpu"} and set(rec["git"]) == {"commit", "dirty"}
    assert rec["value"] == 1 and "torch" in rec["versions"]


def test_ablation_refuses_a_cache_from_another_config() -> None:
    import train_ablation as ta

    old = {"mining": {"retriever": "bm25", "k": 100}, "data": {"split": "train"}}
    new = {"mining": {"retriever": "dense", "k": 100}, "data": {"split": "train"}}
    ta.check_cache("records", "R", {"hash": ta.config_hash(new), "settings": new}, new, "--recompute-records")
    with pytest.raises(ta.StaleCacheError, match=r"mining\.retriever: 'bm25' -> 'dense'.*--recompute-records"):
        ta.check_cache("records", "R", {"hash": ta.config_hash(old), "settings": old}, new, "--recompute-records")
    with pytest.raises(ta.StaleCacheError, match="no configuration hash"):
        ta.check_cache("records", "R", None, new, "--recompute-records")


def test_results_on_the_device_take_the_packed_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the tree on the GPU machine records the commit it was packed from, and says so, even where
    that copy carries a .git of its own (it did, at an older commit, on 2026-12-04)."""
    import _common

    assert _common.git_state(tmp_path) == {"commit": None, "dirty": None}
    monkeypatch.setenv("UNIRET_SOURCE_COMMIT", "abc123")
    monkeypatch.setenv("UNIRET_SOURCE_DIRTY", "0")
    state = _common.git_state(tmp_path)
    assert state["commit"] == "abc123" and state["dirty"] is False and "packed at that commit" in state["from"]
    in_git = _common.git_state(_common.REPO)
    assert in_git["commit"] == "abc123", in_git


def test_device_pack_splits_the_weights_to_fit_both_calls() -> None:
    import device_decoder as dd

    mib = dd.MIB
    assert dd.split_point(94 * mib, 57 * mib, 47 * mib) == 52 * mib  # 5 MiB to spare on each side
    assert dd.split_point(10, 10, 0) == 10 and dd.split_point(10, 0, 10) == 0
    with pytest.raises(ValueError, match="do not fit"):
        dd.split_point(94 * mib, 50 * mib, 40 * mib)


def test_device_jobs_run_at_once_and_stop_at_the_deadline(tmp_path: Path) -> None:
    """``device_decoder.run --parallel --deadline``: a job that finishes returns its files, one still running at
    the deadline is stopped (and says so) and returns none (not the tree's older results file), and the logs
    come back as one archive."""
    import os
    import sys
    import tarfile
    import time

    import device_decoder as dd

    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    out.mkdir()
    made = tmp_path / "made.json"
    quick = dd.Job("quick", [sys.executable, "-c", f"open({str(made)!r}, 'w').write('{{}}'); print('done')"],
                   logs / "quick.log", [(made, out / "quick.json")])
    stale = tmp_path / "stale.json"  # a results file already in the tree, from an earlier run
    stale.write_text("{}")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    slow = dd.Job("slow", [sys.executable, "-c", "import time; time.sleep(60)"], logs / "slow.log",
                  [(stale, out / "slow.json")])
    start = time.monotonic()
    dd.run_jobs([slow, quick], dict(os.environ), out, parallel=True, deadline=start + 3)
    assert time.monotonic() - start < 30  # the slow job was stopped, not waited for
    assert slow.process is not None and slow.process.returncode != 0
    assert (out / "quick.json").read_text() == "{}" and not (out / "slow.json").exists()
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
        assert "logs/quick.log" in names and "logs/slow.log" in names
        assert tar.extractfile("logs/quick.log").read().strip() == b"done"  # type: ignore[union-attr]


def test_sparse_ood_deltas_and_worst_drop_count_trained_rows_only(tmp_path: Path) -> None:
    import sparse_ood

    def row(kind: str, cran: float, ms: float) -> dict:
        return {"kind": kind, "metrics": {"cranfield": {"ndcg@10": cran, "recall@100": 0.5},
                                          "msmarco": {"ndcg@10": ms, "recall@100": 0.5}}}

    rows = {"splade-tiny": row("sparse", 0.36, 0.80), "encoder-splade": row("sparse", 0.38, 0.75),
            "bm25": row("bm25", 0.30, 0.70)}
    sparse_ood.deltas(rows, "splade-tiny")
    assert rows["encoder-splade"]["delta_vs_base"]["cranfield"]["ndcg@10"] == pytest.approx(0.02)
    assert rows["encoder-splade"]["delta_vs_base"]["msmarco"]["ndcg@10"] == pytest.approx(-0.05)
    assert rows["splade-tiny"]["delta_vs_base"]["msmarco"]["ndcg@10"] == 0.0
    rec = {"collections": {"cranfield": "a", "msmarco": "b"}, "base": "splade-tiny", "max_length": 256,
           "rows": rows, "command": "python sparse_ood.py"}
    (tmp_path / "sparse_ood.json").write_text(json.dumps(rec))
    out = render.block_sparse_ood(render.Results(tmp_path))
    assert "| encoder SPLADE (`configs/scifact-splade.yaml`) | – | 0.3800 | +0.0200 | 0.7500 | -0.0500 |" in out
    assert "encoder SPLADE -0.0500" in out and "BM25 -" not in out.split("Worst drop")[1]


def test_generative_fuse_refuses_runs_that_are_not_the_results_files(tmp_path: Path) -> None:
    """``generative.py --part fuse`` adds BM25 rows to another machine's results only when its saved run scores
    what that file says, on the same seeded claims, and only where the BM25 rows were skipped."""
    import argparse

    import generative

    from uniret.data import load_beir
    from uniret.trec import write_trec_run

    data = load_beir("scifact")
    claims = generative._claims(data, 5)
    qrels = data.qrels("test").judgements
    run = {q: {next(iter(qrels[q])): 2.0, "4983": 1.0} for q in claims}  # each claim's first relevant doc first
    runs = tmp_path / "runs"
    runs.mkdir()
    write_trec_run(run, runs / "generative_constrained.trec")
    score = generative._metrics(data, run, claims)["ndcg@10"]
    rec = {"queries": 5, "rows": {"trained 9 steps, constrained": {"ndcg@10": score}}, "bm25_skipped": "no Java"}
    path = tmp_path / "device.json"
    bench = generative.BenchmarkRun("x", results_dir=tmp_path)

    def fuse(record: dict) -> None:
        path.write_text(json.dumps(record))
        generative.fuse(argparse.Namespace(runs=str(runs), device_results=str(path)), bench)

    with pytest.raises(SystemExit, match=r"constrained run scores 0\.\d+, its results file 0\.500000"):
        fuse({**rec, "rows": {"trained 9 steps, constrained": {"ndcg@10": 0.5}}})
    with pytest.raises(SystemExit, match="expected one 'trained N steps, constrained' row, found 0"):
        fuse({**rec, "rows": {}})
    with pytest.raises(SystemExit, match="has its BM25 rows already"):
        fuse({k: v for k, v in rec.items() if k != "bm25_skipped"})
    with pytest.raises(SystemExit, match="outside the seeded 3"):
        fuse({**rec, "queries": 3})
    # a claim the run misses scores 0 (it is not dropped from the mean)
    assert generative._metrics(data, {q: run[q] for q in list(claims)[:4]}, claims)["ndcg@10"] < score


def test_device_grid_variants_parse_and_bad_ones_say_the_form() -> None:
    import device_decoder as dd

    assert dd.parse_grid("sd2:model.background_sd=2.0; loss.temperature=10") == (
        "sd2", ["model.background_sd=2.0", "loss.temperature=10"])
    for bad in ("sd2", ":a=1", "sd 2:a=1", "sd2:a"):
        with pytest.raises(SystemExit, match="TAG:KEY=VALUE"):
            dd.parse_grid(bad)
    assert [t for t, _ in dd.parse_grids(["a:x=1", "b:x=2"])] == ["a", "b"]
    with pytest.raises(SystemExit, match="share a tag"):
        dd.parse_grids(["t-1:x=1", "t_1:x=2"])


def test_device_pack_carries_the_ood_collections_and_the_run_checks_them(tmp_path: Path) -> None:
    """``pack --ood`` tars BEIR folders into part A; ``run --ood`` unpacks exactly those bytes, and refuses a pack
    without them, a changed tarball and a folder that is not a BEIR one."""
    import device_decoder as dd

    sets = []
    for name in ("alpha", "beta"):
        folder = tmp_path / "src" / name
        (folder / "qrels").mkdir(parents=True)
        (folder / "corpus.jsonl").write_text(json.dumps({"_id": f"{name}1", "text": "t"}) + "\n")
        (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "q"}) + "\n")
        (folder / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\t{name}1\t1\n")
        sets.append(folder)
    stage = tmp_path / "stage"
    stage.mkdir()
    assert dd.pack_ood(sets, stage) == ["alpha", "beta"]
    manifest = {"ood": {"sets": ["alpha", "beta"], "sha256": dd.sha256(stage / dd.OOD_TAR)}}
    folders = dd.unpack_ood(stage, manifest, tmp_path / "site", smoke=False)
    assert folders == [stage / "ood" / "alpha", stage / "ood" / "beta"]
    for src, got in zip(sets, folders, strict=True):
        for rel in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
            assert (got / rel).read_bytes() == (src / rel).read_bytes()
    with pytest.raises(SystemExit, match="holds no out-of-domain"):
        dd.unpack_ood(stage, {"ood": None}, tmp_path / "site", smoke=False)
    (stage / dd.OOD_TAR).write_bytes((stage / dd.OOD_TAR).read_bytes()[:-8])
    with pytest.raises(SystemExit, match="not the packed bytes"):
        dd.unpack_ood(stage, manifest, tmp_path / "site", smoke=False)
    with pytest.raises(SystemExit, match="not a BEIR folder"):
        dd.pack_ood([tmp_path / "src"], stage)


def test_device_chain_reports_the_first_failure_and_logs_each_job(tmp_path: Path) -> None:
    """A row's chained jobs (OOD, pruning) run after it and at once; a failure of any shows in the exit status
    (a bare ``wait`` would hide it), and a failed row starts none of them."""
    import subprocess

    import device_decoder as dd

    def status(first: str, a: str, b: str) -> int:
        after = [(["bash", "-c", f"echo {name}; exit {code}"], tmp_path / f"{name}.log")
                 for name, code in (("a", a), ("b", b))]
        return subprocess.run(dd.chain(["bash", "-c", f"exit {first}"], after)).returncode

    assert status("0", "0", "0") == 0 and (tmp_path / "a.log").read_text() == "a\n"
    assert status("0", "3", "0") == 3 and status("0", "0", "4") == 4
    (tmp_path / "a.log").unlink()
    assert status("5", "0", "0") == 5 and not (tmp_path / "a.log").exists()
    assert dd.chain(["x"], []) == ["x"]


def test_device_gguf_rebuilds_from_xz_parts_and_from_raw_ones(tmp_path: Path) -> None:
    import lzma

    import device_decoder as dd

    data = bytes(range(256)) * 1000
    packed = lzma.compress(data)
    (tmp_path / "gguf.part0").write_bytes(packed[:1000])
    (tmp_path / "gguf.part1").write_bytes(packed[1000:])
    assert dd.rebuild_gguf(tmp_path, "xz") == data
    (tmp_path / "gguf.part0").write_bytes(data[:7])
    (tmp_path / "gguf.part1").write_bytes(data[7:])
    assert dd.rebuild_gguf(tmp_path, None) == data  # a pack from before the GGUF travelled compressed
    with pytest.raises(SystemExit, match="gguf_compression 'zstd'"):
        dd.rebuild_gguf(tmp_path, "zstd")


def test_the_generative_recipe_ranks_with_the_setting_its_targets_row_reports() -> None:
    """The targets table marks ``RECIPE_GRID_TEST`` as the recipe: the config must rank with the setting that file
    was read under (the choice of the last dev grid), or the table reports a number the recipe does not give."""
    from uniret.config import load_config
    from uniret.retriever.generative import check_search_options
    from uniret.train.config import TrainConfig

    dev_name, _, _ = next(g for g in render.DEV_GRIDS if render.RECIPE_GRID_TEST in dict(g[1]))
    dev = json.loads((render.RESULTS / f"{dev_name}.json").read_text(encoding="utf-8"))
    chosen, _ = render.grid_choice(dev)
    row = dev["rows"][chosen]
    cfg = load_config(REPO / "configs" / "scifact-generative.yaml", TrainConfig)
    options = check_search_options(cfg.generative.search_options, "configs/scifact-generative.yaml")
    assert options == {name: row[name] for name in options}
    recipe = json.loads((render.RESULTS / f"{render.RECIPE_GRID_TEST}.json").read_text(encoding="utf-8"))
    assert chosen in recipe["rows"] and recipe["queries"] == 300 and recipe.get("constrained", True)

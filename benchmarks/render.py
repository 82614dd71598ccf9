"""Render BENCHMARKS.md's tables from the results files in ``benchmarks/results``.

BENCHMARKS.md holds hand-written prose around generated blocks::

    <!-- BEGIN: name -->
    ...generated...
    <!-- END: name -->

Each block is produced by the function registered under ``name`` in :data:`BLOCKS` from the JSON files alone:
every number, machine label and date in it is read from a results file (written by a script in this folder),
never typed. A block whose file is missing says how to produce it.

    python benchmarks/render.py            # rewrite BENCHMARKS.md in place
    python benchmarks/render.py --check    # exit 1 with a diff if BENCHMARKS.md is not what the files render

README.md is rendered the same way where it carries markers (blocks ``readme-demo``, ``readme-recipe``,
``readme-ood``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "BENCHMARKS.md"
BLOCK = re.compile(r"(<!-- BEGIN: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END: (?P=name) -->)", re.S)


class MissingResult(LookupError):
    """A results file a block needs is not there."""


class Results:
    """The results files of one folder, loaded on demand."""

    def __init__(self, root: str | Path = RESULTS) -> None:
        self.root = Path(root)
        self._cache: dict[str, dict[str, Any] | None] = {}

    def get(self, name: str) -> dict[str, Any] | None:
        if name not in self._cache:
            path = self.root / f"{name}.json"
            self._cache[name] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        return self._cache[name]

    def need(self, *names: str) -> tuple[str, dict[str, Any]]:
        """The first of ``names`` that exists, as (name, record)."""
        for name in names:
            rec = self.get(name)
            if rec is not None:
                return name, rec
        raise MissingResult(" or ".join(f"{n}.json" for n in names))

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json"))


# ---------------------------------------------------------------- provenance, read from the file


def machine_label(rec: dict[str, Any]) -> str:
    """The machine as the file records it. New files: CPU model (+ speed-relevant flags), cores, GPU;
    older files: their recorded ``machine`` line (system prefix dropped)."""
    m = rec.get("machine")
    if isinstance(m, dict):
        cpu = m.get("cpu") or "CPU not recorded"
        flags = [f.upper().replace("_", "-") for f in m.get("cpu_features") or [] if f in ("avx512_bf16", "amx_bf16")]
        if not flags and "avx2" in (m.get("cpu_features") or []):
            flags = ["AVX2"]
        label = cpu + (f" ({', '.join(flags)})" if flags else "") + f", {m.get('cores')} cores"
        return label + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
    if isinstance(m, str):
        return re.sub(r"^Linux x86_64, ", "", m)
    return "machine not recorded"


def _utc(iso: str) -> tuple[str, str]:
    day, _, clock = iso.rstrip("Z").partition("T")
    return day, clock[:5]


def date_label(rec: dict[str, Any]) -> str:
    """When it ran, as the file records it: ``start–end UTC`` for new files; for older files, which recorded
    only the time of saving, that time marked ``(end)``."""
    if rec.get("started_utc") and rec.get("finished_utc"):
        d0, t0 = _utc(rec["started_utc"])
        d1, t1 = _utc(rec["finished_utc"])
        return f"{d0} {t0}–{t1} UTC" if d0 == d1 else f"{d0} {t0} – {d1} {t1} UTC"
    if rec.get("date"):
        return f"{rec['date']} (end)"
    return "date not recorded"


def load_label(rec: dict[str, Any]) -> str:
    """The load average (1, 5, 15 min) when the file was written, if recorded: how shared the machine was."""
    m = rec.get("machine")
    load = m.get("load_average") if isinstance(m, dict) else None
    return " / ".join(f"{x:.1f}" for x in load) if load else "–"


def where_when(rec: dict[str, Any]) -> str:
    return f"{machine_label(rec)}, {date_label(rec)}"


def command(rec: dict[str, Any]) -> str:
    cmd = rec.get("command") or "command not recorded"
    cwd = rec.get("cwd")
    return f"cd {cwd} && {cmd}" if cwd not in (None, ".") else cmd


def source(name: str, rec: dict[str, Any]) -> str:
    """One line naming a block's file, command, machine and date."""
    return f"Raw: `benchmarks/results/{name}.json` — `{command(rec)}` — {where_when(rec)}."


def missing(what: str, how: str) -> str:
    return f"*Not measured yet: no {what}. Produce it with `{how}`, then `python benchmarks/render.py`.*"


# ---------------------------------------------------------------- number formats


def f4(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def f2(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def n0(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def n2(x: float | None) -> str:
    return "–" if x is None else f"{x:,.2f}"


def n1(x: float | None) -> str:
    return "–" if x is None else f"{x:,.1f}"


def metric(metrics: dict[str, Any] | None, key: str) -> float | None:
    return None if not metrics else metrics.get(key)


def table(header: list[str], align: str, rows: list[list[str]]) -> str:
    """A markdown table; ``align`` has one character per column: ``l`` or ``r``."""
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- blocks


def block_provenance(res: Results) -> str:
    """Every results file: its command, machine, date, main library versions and commit."""
    rows = []
    for name in res.names():
        rec = res.get(name) or {}
        v = rec.get("versions") or {}
        git = rec.get("git") or {}
        commit = (git.get("commit") or "")[:10]
        commit = (commit + (" (dirty)" if git.get("dirty") else "")) if commit else "–"
        rows.append([f"`{name}.json`", f"`{command(rec)}`", machine_label(rec), date_label(rec), load_label(rec),
                     v.get("torch", "–"), v.get("transformers", "–"), v.get("sentence-transformers", "–"), commit])
    return table(["file", "command", "machine", "date (UTC)", "load avg at end", "torch", "transformers",
                  "sentence-transformers", "commit"], "lllllllll", rows)


DEMO_SYSTEMS = {"bm25": "BM25, Lucene via pyserini/Anserini (title + text, k1 0.9, b 0.4)",
                "dense (all-MiniLM-L6-v2)": "all-MiniLM-L6-v2, FAISS flat, max length 256",
                "dense (all-MiniLM-L6-v2, zero-shot)": "all-MiniLM-L6-v2, FAISS flat, max length 256",
                "sparse (splade-tiny, zero-shot)": "SPLADE-tiny, PISA, max length 256"}
DEMO_ZERO_SHOT_DENSE = ("dense (all-MiniLM-L6-v2, zero-shot)", "dense (all-MiniLM-L6-v2)")  # new name, older files


def demo_backend(rec: dict[str, Any]) -> str:
    """The dense encoders' inference backend of a demo run (files before the demo recorded it: torch)."""
    return str(rec.get("backend") or "torch")


def demo_zero_shot_dense(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    metrics = (rec or {}).get("metrics", {})
    return next((metrics[n] for n in DEMO_ZERO_SHOT_DENSE if n in metrics), None)


def demo_scope(rec: dict[str, Any]) -> str:
    """What a demo run covered, from its file: ``N test queries, M documents``."""
    if rec.get("num_test_queries"):
        return f"{n0(rec['num_test_queries'])} test queries, {n0(rec['num_docs'])} documents"
    return "50 queries, 400 documents" if rec.get("quick") else "300 queries, 5,183 documents"


def block_zero_shot(res: Results) -> str:
    try:
        name, rec = res.need("demo")
    except MissingResult:
        return missing("`demo.json`", "python benchmarks/demo.py")
    rows = []
    for system, label in DEMO_SYSTEMS.items():
        if system not in rec["metrics"]:
            continue
        m = rec["metrics"][system]
        pub = (rec.get("published") or {}).get(system, {})
        if system.startswith("dense") and demo_backend(rec) != "torch":
            label += f", `{demo_backend(rec)}` inference"
        rows.append([label, f4(m.get("ndcg@10")), f4(m.get("recall@100")), f4(m.get("mrr@10")), f4(m.get("map@100")),
                     f"{f4(pub.get('ndcg@10'))} ({pub.get('source', '–')})"])
    return table(["system (SciFact test, 300 queries, 5,183 documents)", "nDCG@10", "R@100", "MRR@10", "MAP@100",
                  "reference nDCG@10 (source)"], "lrrrrl", rows) + "\n\n" + source(name, rec)


def block_demo_wall(res: Results) -> str:
    rows, sources = [], []
    notes = []
    for name, what in (("demo", "`uniret demo`"), ("demo_quick", "`uniret demo --quick`")):
        rec = res.get(name)
        if rec is None:
            rows.append([what, "–", "–", "–", "–", "–",
                         f"not measured: `python benchmarks/demo.py{' --quick' if 'quick' in name else ''}`", "–"])
            continue
        cpu = rec.get("cpu_seconds")
        before = rec.get("load_average_before")
        stages = rec.get("stages") or {}
        rows.append([f"{what} ({demo_scope(rec)}, `{demo_backend(rec)}`)", n0(rec["wall_seconds"]), n0(rec["demo_total_seconds"]),
                     n0(cpu["user"] + cpu["system"]) if cpu else "–",
                     ", ".join(f"{k} {n0(v)}" for k, v in stages.items()) or "–",
                     " / ".join(f"{x:.1f}" for x in before) if before else "–", where_when(rec), load_label(rec)])
        sources.append(f"`{name}.json` (`{command(rec)}`)")
        if rec.get("note"):
            notes.append(f"`{name}.json`: {rec['note']}.")
    out = table(["run", "wall s (child process)", "demo's own total s", "CPU s (user + system)", "stages (s)",
                 "load avg at start", "machine, date", "load avg at end"], "lrrrllll", rows)
    return out + ("\n\n" + " ".join(notes) if notes else "") + ("\n\nRaw: " + ", ".join(sources) + "." if sources else "")


def demo_rows(rec: dict[str, Any]) -> list[list[str]]:
    """The demo's systems with nDCG@10, R@100, MRR@10 and MAP@100."""
    return [[system, f4(m.get("ndcg@10")), f4(m.get("recall@100")), f4(m.get("mrr@10")), f4(m.get("map@100"))]
            for system, m in rec["metrics"].items()]


def block_demo_systems(res: Results) -> str:
    """Every system of the full demo, the training run and the per-query win/loss of trained vs zero-shot."""
    try:
        name, rec = res.need("demo")
    except MissingResult:
        return missing("`demo.json`", "python benchmarks/demo.py")
    rows = demo_rows(rec)
    parts = [table([f"system (`uniret demo`, {demo_scope(rec)})", "nDCG@10", "R@100", "MRR@10", "MAP@100"], "lrrrr",
                   rows)]
    t = rec.get("training")
    if t:
        parts.append(f"Trained row: `{t['recipe']}` at the demo's budget, {t['steps']} steps x batch {t['batch_size']} "
                     f"(lr {t['learning_rate']:g}; BM25-mined hard negatives, one per query, no teachers) on the "
                     f"{n0(t['train_queries'])} SciFact *train* queries ({n0(t['train_seconds'])} s training, "
                     f"{n0(t['prep_seconds'])} s preparation and mining, {f2(t['examples_per_second'])} examples/s).")
    wl = rec.get("win_loss")
    zs = demo_zero_shot_dense(rec)
    trained = next((m for n, m in rec["metrics"].items() if n.startswith("dense") and "trained" in n), None)
    if wl and zs and trained:
        parts.append(f"Trained minus zero-shot dense nDCG@10: **{trained['ndcg@10'] - zs['ndcg@10']:+.4f}**; per "
                     f"query ({rec.get('win_loss_metric', 'ndcg@10')}): {wl['wins']} wins, {wl['losses']} losses, "
                     f"{wl['ties']} ties.")
    if rec.get("not_shown"):
        parts.append(" ".join(f"Not shown: {k}, {v}." for k, v in rec["not_shown"].items()))
    parts.append(source(name, rec))
    return "\n\n".join(parts)


def block_encode_throughput(res: Results) -> str:
    try:
        name, rec = res.need("encode_throughput")
    except MissingResult:
        return missing("`encode_throughput.json`", "python benchmarks/encode_throughput.py")
    d = rec["docs_per_s"]
    rows = [["`SentenceTransformer.encode`", n1(d["sentence_transformers"])], ["uniret `DenseEncoder`", n1(d["uniret"])],
            ["**ratio uniret / sentence-transformers**", f"**{f2(rec['ratio_uniret_over_st'])}**"]]
    return (table(["encoder", "docs/s"], "lr", rows) + "\n\n"
            + f"{n0(rec['documents'])} SciFact documents, batch size {rec['batch_size']}, max length "
              f"{rec['max_length']}, {rec['torch_threads']} torch threads, {rec['rounds']} alternating rounds; "
              f"embeddings agree to {rec['max_abs_diff']:.0e} (max absolute difference).\n\n" + source(name, rec))


ENCODER_LABELS = {"sentence_transformers": "`SentenceTransformer.encode` (torch)", "uniret_torch": "uniret `torch`",
                  "uniret_onnx": "uniret `onnx` (ONNX Runtime fp32)", "uniret_onnx-int8": "uniret `onnx-int8`",
                  "uniret_bf16": "uniret `bf16` (torch, bfloat16 autocast)",
                  "fastembed_onnx": "fastembed on uniret's `onnx` graph", "fastembed_onnx-int8": "fastembed on uniret's `onnx-int8` graph",
                  "st_onnx": "sentence-transformers `backend=\"onnx\"` (optimum export)",
                  **{f"st_onnx_O{i}": f"sentence-transformers `backend=\"onnx\"`, optimised {i}" for i in (1, 2, 3)},
                  "st_onnx_qint8_avx512_vnni": "sentence-transformers `backend=\"onnx\"`, dynamic int8 (avx512_vnni)"}


def peer_note(peer: dict[str, Any]) -> str:
    """Where the sentence-transformers ONNX rows ran: their own venv (optimum needs transformers < 4.58)."""
    v = peer["versions"]
    return (f" The sentence-transformers ONNX rows ran in a separate venv (`benchmarks/st_onnx_peer.py`: "
            f"sentence-transformers {v['sentence-transformers']}, transformers {v['transformers']}, optimum-onnx "
            f"{v['optimum-onnx']}, onnxruntime {v['onnxruntime']}), exported before timing and interleaved in the "
            "same rounds.")


def other_encode_runs(res: Results, shown: str) -> str:
    """The other runs of the same benchmark (``encode_backends_*.json``: other machines, busy cores), one row each,
    as ratios over sentence-transformers torch measured within that run."""
    names = [n for n in res.names() if n.startswith("encode_backends_") and n != shown]
    if not names:
        return ""
    runs = [(n, res.get(n)) for n in names]
    keys = [k for k in ("uniret_torch", "uniret_bf16", "uniret_onnx", "uniret_onnx-int8")
            if any(k in r["ratio_over_st_torch"] for _, r in runs)]
    rows = [[f"`{n}.json`", machine_label(r), date_label(r), load_label(r), n1(r["docs_per_s"]["sentence_transformers"]),
             *[f2(r["ratio_over_st_torch"].get(k)) for k in keys]]
            for n, r in runs]
    return ("\n\nOther runs of the same benchmark (each row one run; × sentence-transformers torch within that run; "
            "commands in the index of results files at the top):\n\n"
            + table(["results file", "machine", "date", "load average", "sentence-transformers torch docs/s",
                     *[ENCODER_LABELS.get(k, k) for k in keys]], "llllr" + "r" * len(keys), rows))


def block_encode_backends(res: Results) -> str:
    try:
        name, rec = res.need("encode_backends")
    except MissingResult:
        return missing("`encode_backends.json`",
                       "python benchmarks/encode_throughput.py --limit 300 --rounds 2 --backends torch onnx onnx-int8")
    floor = rec["issue_fp32_floor_docs_per_s"]
    measured = rec.get("machine_floor")
    rows = []
    for key, dps in rec["docs_per_s"].items():
        fid = rec["fidelity_to_st_torch"][key]
        rows.append([ENCODER_LABELS.get(key, key), n1(dps), f"**{f2(rec['ratio_over_st_torch'][key])}**",
                     f"{dps / floor:.2f}", *([f"{dps / measured['floor_docs_per_s']['float32']:.2f}"] if measured else []),
                     f"{fid['min_cosine']:.6f}", f"{fid['max_abs_diff']:.0e}"])
    floor_note = ""
    if measured:
        g, f = measured["gemm_gflops"], measured["floor_docs_per_s"]
        shape = " × ".join(n0(x) for x in measured["gemm_shape"])
        samples = measured.get("gemm_gflops_samples") or []
        how = (f", the best of {len(samples)} measurements, one after each round (fp32 ranged "
               f"{n0(min(x['float32'] for x in samples))}–{n0(max(x['float32'] for x in samples))})"
               if len(samples) > 1 else "")
        floor_note = (f" This machine's floor, measured in the same run: the model's largest matrix product "
                      f"({shape}) runs at {n0(g['float32'])} GFLOP/s in fp32 and {n0(g['bfloat16'])} GFLOP/s in bf16 "
                      f"({rec['torch_threads']} threads{how}); at {measured['model_flops_per_token'] / 1e6:.1f} MFLOP per "
                      f"token (attention included) that is **{n1(f['float32'])} docs/s in fp32** and "
                      f"{n1(f['bfloat16'])} docs/s in bf16 if every FLOP ran at that rate, so 1.3× "
                      f"sentence-transformers torch ({n1(1.3 * rec['docs_per_s']['sentence_transformers'])} docs/s) "
                      f"is {1.3 * rec['docs_per_s']['sentence_transformers'] / f['float32']:.0%} of the fp32 floor.")
    out = (table(["encoder", "docs/s", "× sentence-transformers torch", "× issue's fp32 floor (37 docs/s)",
                  *([f"× measured fp32 floor ({n1(measured['floor_docs_per_s']['float32'])} docs/s)"] if measured else []),
                  "min cosine vs torch", "max abs diff"], "lrrr" + ("r" if measured else "") + "rr", rows) + "\n\n"
           + f"{n0(rec['documents'])} SciFact documents ({n0(rec['tokens_per_document'])} tokens each on average), "
             f"batch size {rec['batch_size']}, max length {rec['max_length']}, {rec['torch_threads']} torch threads, "
             f"{rec['onnx_threads']} ONNX Runtime intra-op threads, {rec['rounds']} rounds in rotating order"
             + (f"; load average {rec['machine']['load_average_at_start'][0]:.1f} at the start"
                + (" (other jobs shared the cores: absolute rates are far below this machine's, the ratios of one "
                   "run are the measurement)" if rec["machine"]["load_average_at_start"][0] >= 3 else
                   " (no other job of this session ran; the load is the tail of the previous one)")
                if (rec.get("machine") or {}).get("load_average_at_start") else "") + "."
           + (peer_note(rec["st_onnx_peer"]) if rec.get("st_onnx_peer") else "") + floor_note + "\n\n"
           + source(name, rec) + other_encode_runs(res, name))
    try:
        fname, fid = res.need("backend_fidelity")
    except MissingResult:
        return out + "\n\n" + missing("`backend_fidelity.json`", "cd benchmarks && python backend_fidelity.py")
    b = fid["backends"]
    rows = [[f"`{k}`", f4(v["ndcg@10"]), f4(v["recall@100"])] for k, v in b.items()]
    diff = fid.get("int8_minus_fp32_ndcg@10")
    demo = res.get("demo_torch_reference") or res.get("demo")
    dense = demo_zero_shot_dense(demo)
    if "onnx" not in b and "onnx-int8" in b and dense and demo and not demo.get("quick") and demo_backend(demo) == "torch":
        # fp32 reference: the demo's torch run on the same corpus, model, batch size and max length (onnx fp32
        # embeddings equal torch's within 1e-5, so its nDCG is torch's)
        which = "demo_torch_reference.json" if res.get("demo_torch_reference") else "demo.json"
        rows.insert(0, [f"`torch` (fp32; the demo's run, `{which}`)", f4(dense["ndcg@10"]), f4(dense["recall@100"])])
        diff = b["onnx-int8"]["ndcg@10"] - dense["ndcg@10"]
    bf16 = res.get("backend_fidelity_bf16")
    bf16_note = ""
    if bf16 is not None and "bf16" in bf16["backends"]:
        row = bf16["backends"]["bf16"]
        rows.append(["`bf16` (`backend_fidelity_bf16.json`)", f4(row["ndcg@10"]), f4(row["recall@100"])])
        fp32 = (bf16["backends"].get("torch") or dense or {}).get("ndcg@10")
        if fp32 is not None:
            bf16_note = f"\n\nbf16 − fp32 nDCG@10: **{row['ndcg@10'] - fp32:+.4f}** (bar: within 0.005)."
        bf16_note += "\n\n" + source("backend_fidelity_bf16", bf16)
    return (out + "\n\nFull SciFact (test split, " + n0(fid["documents"]) + " documents, "
            + n0(fid["queries"]) + " queries), as `uniret eval --retriever dense --backend BACKEND`:\n\n"
            + table(["backend", "nDCG@10", "recall@100"], "lrr", rows)
            + (f"\n\nint8 − fp32 nDCG@10: **{diff:+.4f}** (bar: within 0.005)." if diff is not None else "")
            + "\n\n" + source(fname, fid) + bf16_note + int8_sensitivity(res))


def int8_sensitivity(res: Results) -> str:
    """Cosine to fp32 of int8 variants that keep different matrix products float (``int8_sensitivity.json``)."""
    rec = res.get("int8_sensitivity")
    if rec is None:
        return ""
    rows = [[("**default** (`onnx-int8`)" if name == "default" else name),
             (", ".join(f"`{k.split('encoder/')[-1]}`" for k in v["kept_float"]) or "–") if len(v["kept_float"]) <= 1
             else f"{len(v['kept_float'])} products", f"{v['mean_cosine']:.5f}", f"{1 - v['mean_cosine']:.5f}",
             f"{v['p1_cosine']:.5f}", f"{v['min_cosine']:.5f}", n1(v["seconds"])]
            for name, v in rec["variants"].items()]
    return ("\n\nWhich matrix products int8 hurts most: the fp32 export quantised with a different set kept float, "
            f"cosine to the fp32 embeddings of the first {n0(rec['documents'])} SciFact documents (seconds: one "
            "encode each, a rough cost only):\n\n"
            + table(["int8 variant", "kept float", "mean cosine", "1 − mean cosine", "1st percentile", "min",
                     "seconds"], "llrrrrr", rows)
            + "\n\n" + source("int8_sensitivity", rec))


def block_bm25_qps(res: Results) -> str:
    try:
        name, rec = res.need("bm25_qps")
    except MissingResult:
        return missing("`bm25_qps.json`", "python benchmarks/bm25_qps.py")
    rows = []
    for k, r in sorted(rec["per_k"].items(), key=lambda kv: int(kv[0])):
        rows.append([k, n0(r["uniret_lucene_qps"]), n0(r["bm25s_qps"]), f2(r["ratio_uniret_over_bm25s"]),
                     f4(r["uniret_lucene_ndcg@10"]), f4(r["bm25s_ndcg@10"])])
    idx = rec["index_seconds"]
    return (table(["k", "uniret (Lucene) q/s", "bm25s q/s", "ratio", "nDCG@10 uniret", "nDCG@10 bm25s"], "rrrrrr", rows)
            + f"\n\n{n0(rec['queries'])} queries, {rec['repeat']} timed passes after a warm-up pass; search threads "
              f"uniret {rec['search_threads']['uniret_lucene']}, bm25s {rec['search_threads']['bm25s']}. Index build: "
              f"uniret/Lucene {n1(idx['uniret_lucene'])} s (JVM start included), bm25s {n1(idx['bm25s'])} s.\n\n"
            + source(name, rec))


# The dense recipe table: one row per results file (the first file of each tuple that exists).
DENSE_ROWS = (
    ("sentence-transformers `SentenceTransformerTrainer` + MNRL on `mine_hard_negatives` defaults, lr 5e-5 "
     "(the `TrainingArguments` default)", ("scifact_dense_st_lr5e5", "train_ablation_100_st_lr5e5"),
     "python benchmarks/dense_recipe.py --rows st5e5"),
    ("sentence-transformers, same, at the recipe's lr 1e-4", ("scifact_dense_st_lr1e4", "train_ablation_100_st_lr1e4"),
     "python benchmarks/dense_recipe.py --rows st1e4"),
    ("**uniret full recipe** (`configs/scifact-dense.yaml`)", ("scifact_dense_recipe",),
     "python benchmarks/dense_recipe.py --rows recipe"),
    ("uniret recipe, 200 steps (config: 100; not adopted: out-of-domain drop > 0.005)", ("scifact_dense_200steps",),
     "python benchmarks/dense_recipe.py --rows recipe --set trainer.max_steps=200"),
    ("uniret recipe + `trainer.anchor_decay: 200` (decoupled L2-SP towards the base; not adopted: below the recipe "
     "on dev, test and agentset-msmarco-5k)", ("scifact_dense_anchor200",),
     "python benchmarks/dense_recipe.py --rows recipe --set trainer.anchor_decay=200"),
)


def dense_row(rec: dict[str, Any]) -> dict[str, Any]:
    """A dense-recipe row from a ``dense_recipe.py`` file or an older ``train_ablation.py`` file (row ``st``)."""
    if "rows" in rec:  # train_ablation.py layout
        r = rec["rows"]["st"]
        return {"test": r["test"], "dev": r.get("dev"), "ood": r.get("ood"),
                "train_wall": r["mine_seconds"] + r["train_seconds"],
                "eval_wall": None, "wall": r["wall_seconds"], "steps": rec.get("steps"), "batch": rec.get("batch_size")}
    return {"test": rec["test"], "dev": rec.get("dev"), "ood": rec.get("ood"), "train_wall": rec["train_wall_seconds"],
            "eval_wall": rec["eval_wall_seconds"], "wall": rec["train_wall_seconds"] + rec["eval_wall_seconds"],
            "steps": rec.get("steps"), "batch": rec.get("batch_size")}


def ood_cell(ood: dict[str, Any] | None) -> str:
    """``name after (Δ)`` per out-of-domain collection of a ``train_result``-style ``ood`` entry, or –."""
    if not ood:
        return "–"
    return "; ".join(f"{n} {f4(r['after'])} ({r['difference']:+.4f})" for n, r in ood.items())


def block_dense_recipe(res: Results) -> str:
    rows = []
    demo = res.get("demo")
    if demo is not None:
        zero_shot = "all-MiniLM-L6-v2 zero-shot" + ("" if demo_backend(demo) == "torch" else f" ({demo_backend(demo)})")
        for system, label in ((DEMO_ZERO_SHOT_DENSE, zero_shot), (("bm25",), "BM25 (Lucene)")):
            m = next(demo["metrics"][n] for n in system if n in demo["metrics"])
            rows.append([label, "–", f4(m["ndcg@10"]), f4(m["recall@100"]), f4(m["mrr@10"]), "–", "–", "–", "–",
                         where_when(demo), "`demo.json`"])
    for label, names, how in DENSE_ROWS:
        try:
            name, rec = res.need(*names)
        except MissingResult:
            rows.append([label, "–", "–", "–", "–", "–", "–", "–", "–", f"not measured yet: `{how}`", "–"])
            continue
        r = dense_row(rec)
        rows.append([label, f"{r['steps']} × {r['batch']}", f4(metric(r["test"], "ndcg@10")),
                     f4(metric(r["test"], "recall@100")), f4(metric(r["test"], "mrr@10")), f4(metric(r["dev"], "ndcg@10")),
                     ood_cell(r.get("ood")), n0(r["train_wall"]), n0(r["eval_wall"]), where_when(rec), f"`{name}.json`"])
    return table(["model", "steps × batch", "test nDCG@10", "test R@100", "test MRR@10", "dev nDCG@10",
                  "out-of-domain nDCG@10 (Δ vs base)", "train wall s (with mining)", "test eval s", "machine, date",
                  "raw"], "llrrrrlrrll", rows)


def block_dense_recipe_details(res: Results) -> str:
    lines = []
    rec = res.get("scifact_dense_recipe")
    if rec is None:
        return missing("`scifact_dense_recipe.json`", "python benchmarks/dense_recipe.py --rows recipe")
    mining = rec.get("mining") or {}
    removed = (mining.get("removed") or {}).get("relative")
    lines.append(f"- Recipe run: `{command(rec)}` ({where_when(rec)}; load average at the end {load_label(rec)}). "
                 f"Training {n0(rec['train_wall_seconds'])} s wall (preparation: mining and teacher scores "
                 f"{n0(rec['prep_seconds'])} s, of which teacher scoring {n0(rec.get('teacher_seconds'))} s; "
                 f"{rec['steps']} steps in {n0(rec['train_seconds'])} s at {n1(rec['examples_per_second'])} examples/s), "
                 f"then the test evaluation {n0(rec['eval_wall_seconds'])} s.")
    if mining:
        lines.append(f"- Mining: {n0(mining.get('queries'))} training queries; the relative-margin filter removed "
                     f"{n0(removed)} of {n0(mining.get('candidates'))} candidates and left "
                     f"{n0(mining.get('queries_without_negatives'))} queries without negatives; "
                     f"{n0(mining.get('negatives'))} negatives kept.")
    test = rec["test"]["ndcg@10"]
    gaps = []
    for label, names in (("its default lr 5e-5", ("scifact_dense_st_lr5e5", "train_ablation_100_st_lr5e5")),
                         ("the same lr 1e-4", ("scifact_dense_st_lr1e4", "train_ablation_100_st_lr1e4"))):
        try:
            name, st = res.need(*names)
        except MissingResult:
            gaps.append(f"against sentence-transformers at {label}: not measured yet")
            continue
        st_test = dense_row(st)["test"]["ndcg@10"]
        diff = test - st_test
        other = "" if machine_label(st) == machine_label(rec) else f"; measured on another machine: {machine_label(st)}"
        gaps.append(f"against sentence-transformers at {label} {'**met**' if diff >= 0.02 else '**not met**'} "
                    f"({diff:+.4f}: {f4(test)} vs {f4(st_test)}, `{name}.json`{other})")
    sweep = rec.get("interpolation")
    if sweep:
        lines.append(f"- WiSE-FT (`interpolate`): α = {sweep['chosen']:g} of "
                     + ", ".join(f"{c['alpha']:g}" for c in sweep["candidates"]) + f", chosen by the rule: {sweep['rule']}; "
                     "per α (dev nDCG@10; out-of-domain Δ vs base): " + "; ".join(
                         f"{c['alpha']:g}: {f4(c['dev'])}; " + ", ".join(f"{n} {-d:+.4f}" for n, d in c["ood_drops"].items())
                         for c in sweep["candidates"]) + ".")
    lines.append(f"- Targets: test nDCG@10 ≥ 0.72 {'**met**' if test >= 0.72 else '**not met**'} ({f4(test)}). "
                 "Beating sentence-transformers by ≥ 0.02: " + "; ".join(gaps) + ".")
    return "\n".join(lines)


ABLATION_ROWS = (("inbatch", "InfoNCE, in-batch only"), ("bm25", "+ BM25 hard negatives, unfiltered"),
                 ("margin", "+ relative-margin filter (0.95)"),
                 ("distill", "+ soft-label distillation (BM25 + MiniLM ensemble)"),
                 ("full", "+ focal / mixing / curriculum (full)"),
                 ("st", "sentence-transformers baseline (MNRL, `mine_hard_negatives`)"))


def block_ablation_40(res: Results) -> str:
    try:
        name, rec = res.need("train_ablation")
    except MissingResult:
        return missing("`train_ablation.json`", "python benchmarks/train_ablation.py --out runs/ablation")
    rows = []
    for key, label in ABLATION_ROWS:
        r = rec["rows"].get(key)
        if r is None:
            continue
        train = n0(r["train_seconds"]) + (f" (+{n0(r['mine_seconds'])} mining)" if "mine_seconds" in r else "")
        rows.append([label, f4(metric(r.get("dev"), "ndcg@10")), f4(r["test"]["ndcg@10"]), f4(r["test"]["recall@100"]),
                     f4(r["test"]["mrr@10"]), ood_cell(r.get("ood")), train, n0(r["wall_seconds"])])
    return (table(["row", "dev nDCG@10", "test nDCG@10", "test R@100", "test MRR@10", "out-of-domain nDCG@10 (Δ vs base)",
                   "train s", "wall s"], "lrrrrlrr", rows) + f"\n\n{rec['steps']} steps × batch {rec['batch_size']}. " + source(name, rec))


THROUGHPUT_FILES = ("train_throughput_2026_11_25", "train_throughput", "train_throughput_bf16", "train_throughput_attn0")
THROUGHPUT_COMMON = re.compile(r"--(steps|batch-size|max-length|result) \S+")


def throughput_flags(rec: dict[str, Any]) -> str:
    """The flags a throughput row adds to the common command line, read from its recorded command."""
    cmd = rec.get("command", "")
    rest = THROUGHPUT_COMMON.sub("", cmd.split("train_throughput.py", 1)[-1]).split()
    return f"`{' '.join(rest)}`" if rest else "(none: identical computation, fp32)"


def block_train_throughput(res: Results) -> str:
    rows = []
    for name in THROUGHPUT_FILES:
        rec = res.get(name)
        if rec is None:
            continue
        e = rec["examples_per_s"]
        ratio = f2(rec["ratio_uniret_over_st"])
        rows.append([throughput_flags(rec), where_when(rec), f2(e["sentence_transformers"]), f2(e["uniret"]),
                     f"**{ratio}**" if rec["ratio_uniret_over_st"] >= 1.2 else ratio,
                     "same" if rec.get("identical_computation", True) else "**different** (recipes compared)",
                     f"`{name}.json`"])
    if not rows:
        return missing("`train_throughput*.json`", "python benchmarks/train_throughput.py")
    return table(["flags", "machine, date", "`SentenceTransformerTrainer` ex/s", "uniret ex/s", "ratio", "computation",
                  "raw"], "llrrrll", rows)


DECODER_ROWS = (("minilm-zero-shot", "all-MiniLM-L6-v2 (reference)"),
                ("last-token", "SmolLM2-135M, causal, last-token (EOS) pooling"),
                ("bidirectional-mean", "SmolLM2-135M, bidirectional attention, mean pooling"))


def block_decoder_embedder(res: Results) -> str:
    out = []
    for name in ("decoder_embedder_12steps", "decoder_embedder_40steps"):
        rec = res.get(name)
        if rec is None:
            continue
        rows = []
        for key, label in DECODER_ROWS:
            r = rec["rows"].get(key)
            if r is None:
                continue
            zero = r["test"] if key == "minilm-zero-shot" else r["zero_shot_test"]
            after = "–" if key == "minilm-zero-shot" else f4(r["test"]["ndcg@10"])
            rows.append([label, f4(zero["ndcg@10"]), after, n0(r.get("train_seconds"))])
        ts = rec["test_slice"]
        out.append(f"{rec['steps']} steps (batch {rec['batch_size']}, max length {rec['max_length']}, lr {rec['lr']:g}, "
                   f"LoRA r {rec['lora']['r']} / α {rec['lora']['alpha']}; {ts['queries']} test queries against "
                   f"{ts['docs']} documents):\n\n"
                   + table(["model (reduced test corpus)", "zero-shot nDCG@10", f"after {rec['steps']} steps",
                            "train s"], "lrrr", rows) + "\n\n" + source(name, rec))
    return "\n\n".join(out) if out else missing("`decoder_embedder_*.json`", "python benchmarks/decoder_embedder.py")


def block_reranker(res: Results) -> str:
    try:
        name, rec = res.need("reranker_bm25")
        fname, fusion = res.need("reranker_fusion")
    except MissingResult as e:
        return missing(f"`{e.args[0]}`", "python benchmarks/reranker_bm25.py; python benchmarks/reranker_fusion.py")
    w = fusion["best_weight"]
    fused = fusion["test"][str(w)] if str(w) in fusion["test"] else fusion["test"][f"{w:.1f}"]
    rows = [["BM25 (first stage)", f4(rec["bm25"]["ndcg@10"]), f4(rec["bm25"]["recall@100"]), f4(rec["bm25"]["mrr@10"])],
            [f"BM25 top {rec['depth']} → reranker score alone", f4(rec["bm25+rerank"]["ndcg@10"]),
             f4(rec["bm25+rerank"]["recall@100"]), f4(rec["bm25+rerank"]["mrr@10"])],
            [f"**BM25 top {fusion['depth']} → {w:g} × reranker + {1 - w:g} × BM25** (min-max per query; weight chosen "
             "on dev)", f"**{f4(fused['ndcg@10'])}**", f4(fused["recall@100"]), f4(fused["mrr@10"])]]
    sweep = ", ".join(f"{float(k):g}: {v:.3f}" for k, v in sorted(fusion["dev_ndcg@10"].items(), key=lambda kv: float(kv[0])))
    return (table(["system (SciFact test, 300 queries)", "nDCG@10", "R@100", "MRR@10"], "lrrr", rows) + "\n\n"
            + f"Reranker: {rec['train_steps']} training steps in {n0(rec['train_seconds'])} s; reranking the test "
              f"queries' top {rec['depth']} took {n0(rec['rerank_wall_seconds'])} s. " + source(name, rec) + "\n\n"
            + f"Fusion weight w on the {fusion['dev_queries']} dev queries (nDCG@10; w 0 is BM25 alone): {sweep}; "
              f"best {w:g}. " + source(fname, fusion))


HYBRID_LABELS = {"bm25": "BM25 alone", "dense": "dense alone", "rrf": "hybrid, RRF (k 60)"}


def block_hybrid(res: Results) -> str:
    """The hybrid family on SciFact: BM25 + the trained recipe model, and BM25 + base MiniLM."""
    parts = [hybrid_table(res, n) for n in ("hybrid_scifact_recipe", "hybrid_scifact") if res.get(n) is not None]
    return "\n\n".join(parts) or missing("`hybrid_scifact.json`",
                                          "python benchmarks/hybrid_scifact.py --bm25 IDX --dense IDX")


def hybrid_table(res: Results, name: str) -> str:
    """Each member alone and fused (weights chosen on the selection queries, never on test)."""
    rec = res.get(name)
    best_single = rec["systems"][rec["best_single"]]["test"]["ndcg@10"]
    rows = []
    for system, r in rec["systems"].items():
        t = r["test"]
        label = HYBRID_LABELS.get(system, f"hybrid, `{system}`")
        norm, _, weight = system.partition(":")
        if norm in ("minmax", "zscore"):
            w = float(weight)
            chosen = w == float(rec["best_weight"][norm])
            label += f" (BM25 {w:g}, dense {1 - w:g}{'; chosen on the selection queries' if chosen else ''})"
        gain = "" if system in ("bm25", "dense") else f"{t['ndcg@10'] - best_single:+.4f}"
        bold = system not in ("bm25", "dense") and t["ndcg@10"] > best_single
        rows.append([label, f"**{f4(t['ndcg@10'])}**" if bold else f4(t["ndcg@10"]), gain, f4(t["recall@100"]),
                     f4(t["mrr@10"]), f4(r["train"]["ndcg@10"])])
    sweep = "; ".join(f"{norm}: " + ", ".join(f"{float(w):g} {v:.3f}" for w, v in s.items())
                      for norm, s in rec["train_sweep_ndcg@10"].items())
    return (table([f"system ({rec['data']} test, {rec['test_queries']} queries)", "nDCG@10",
                   f"vs best single ({rec['best_single']})", "R@100", "MRR@10",
                   f"selection nDCG@10 ({rec['train_queries']} q)"], "lrrrrr", rows) + "\n\n"
            + f"Dense member: {rec['dense_model_note']}. Weights chosen on "
            + f"{rec.get('selection_queries', 'all train queries')}; sweep of the BM25 weight W (nDCG@10): {sweep}. "
            + source(name, rec))


def block_serve_latency(res: Results) -> str:
    """Search service latency (p50/p99) and throughput at 1/10/100 clients, with and without micro-batching."""
    try:
        name, rec = res.need("serve_latency")
    except MissingResult:
        return missing("`serve_latency.json`", "python benchmarks/serve_latency.py --index IDX")
    modes = {"micro_batching": "micro-batching", "one_request_per_call": "one request per call"}
    rows = []
    for mode, label in modes.items():
        for c in rec["cells"].get(mode, []):
            rows.append([label, str(c["clients"]), n1(c["p50_ms"]), n1(c["p99_ms"]), n1(c["throughput_rps"]),
                         n1(c["queries_per_call"]), str(c["errors"])])
    idx = rec["index"]
    return (table(["service", "concurrent clients", "p50 ms", "p99 ms", "requests/s", "queries per encoder call",
                   "errors"], "lrrrrrr", rows) + "\n\n"
            + f"Index: {idx['kind']} over {n0(idx['num_docs'])} documents ({idx.get('encoder')}), k {rec['k']}, "
              f"{rec['requests_per_cell']} requests per row, micro-batching wait bound {rec['max_wait_ms']:g} ms, "
              f"service on {rec['service_device']}; client: {rec['client']}. Load average at the end: "
              f"{load_label(rec)} (the cores were shared with other jobs: absolute latencies are a busy machine's; "
              "compare the rows). " + source(name, rec))
def block_generative_structures(res: Results) -> str:
    rec = res.get("generative_structures")
    if rec is None:
        return missing("`generative_structures.json`", "python benchmarks/generative.py --part structures")
    sa, fm, trie = rec["suffix_array"], rec.get("fm_index"), rec["title_trie"]
    mb = 1024 * 1024
    rows = [["n-gram suffix array (numpy, `.npy`) — chosen", n1(sa["build_seconds"]), n1(sa["bytes"] / mb),
             n1(sa["count_us"]), n1(sa["documents_us"]), n1(sa["next_tokens_us"])]]
    if fm:
        rows.append(["FM-index (`fm-index` package; locate + gather for next tokens)", n1(fm["build_seconds"]),
                     n1(fm["bytes"] / mb), n1(fm["count_us"]), n1(fm["documents_us"]), n1(fm["next_tokens_us"])])
    rows.append([f"title trie (marisa-trie, {trie['titles']:,} titles)", f2(trie["build_seconds"]),
                 f2(trie["bytes"] / mb), "–", "–", "–"])
    return (table(["structure (SciFact, full corpus)", "build s", "MiB", "count µs", "documents µs",
                   "next tokens µs"], "lrrrrr", rows) + "\n\n"
            + f"{rec['docs']:,} documents, {rec['tokens']:,} SmolLM2 tokens (tokenising: {n1(rec['tokenize_seconds'])} s); "
              f"query times are means over {rec.get('patterns', 0):,} n-grams of 1-5 tokens drawn from the corpus "
              f"(next tokens uncached). Load average at start: {load_label_start(rec)}. " + source("generative_structures", rec))


def load_label_start(rec: dict[str, Any]) -> str:
    m = rec.get("machine")
    load = m.get("load_average_at_start") if isinstance(m, dict) else None
    return " / ".join(f"{x:.1f}" for x in load) if load else "–"


def block_generative_trained(res: Results) -> str:
    rec = res.get("generative_trained")
    if rec is None:
        return missing("`generative_trained.json`", "python benchmarks/generative.py --part trained")
    rows = []
    for label, r in rec["rows"].items():
        qps = f2(r["queries_per_second"]) if "queries_per_second" in r else "–"
        valid = f"{100 * r['valid_rate']:.1f}% of {r['generated']:,}" if "valid_rate" in r else "–"
        rows.append([label, f4(r.get("ndcg@10")), f4(r.get("recall@100")), qps, valid])
    t = rec["train"]
    return (table([f"system ({rec['queries']} SciFact test claims, full corpus of {rec['docs']:,})", "nDCG@10",
                   "R@100", "queries/s", "valid identifiers"], "lrrrr", rows) + "\n\n"
            + f"Training: `{t['config']}` with {t['steps']} steps of {t['batch_size']} claims (+ as many indexing "
              f"pairs), {n0(t['train_seconds'])} s ({n2(t['seconds_per_step'])} s/step) on {rec.get('device', 'cpu')}, "
              f"final loss {f2(t['final_loss'])}; beam {rec['beams']}; index build {n1(rec['index_seconds'])} s. "
              f"Load average at start: {load_label_start(rec)}. " + source("generative_trained", rec)
            + fused_here_line(rec) + (f" {rec['device_note']}." if rec.get("device_note") else "")
            + cpu_trained_line(res))


def trained_rows(rows: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A generative_trained file's trained model rows: (constrained, unconstrained ablation); {} where absent."""
    con = next((v for k, v in rows.items() if k.startswith("trained") and k.endswith(", constrained")), {})
    return con, next((v for k, v in rows.items() if k.startswith("trained") and "unconstrained" in k), {})


def fused_here_line(rec: dict[str, Any]) -> str:
    """Where the BM25 rows of a results file measured on a machine without Java were computed."""
    f = rec.get("fused_here")
    if not f:
        return ""
    return (f" {' and '.join(f['rows'])}: computed from the runs that machine saved, here — `{f['command']}` — "
            f"{where_when(f)}.")


def cpu_trained_line(res: Results) -> str:
    """The same benchmark at the CPU budget, when the table above is a GPU run's."""
    cpu = res.get("generative_trained_cpu")
    if cpu is None:
        return ""
    t, r = cpu["train"], cpu["rows"]
    con, unc = trained_rows(r)
    return (f"\n\nOn 2 CPU cores, at the budget they allow ({t['steps']} steps of {t['batch_size']} claims, "
            f"{n0(t['train_seconds'])} s): constrained {f4(con.get('ndcg@10'))} nDCG@10 at "
            f"{f2(con.get('queries_per_second'))} queries/s, unconstrained {f4(unc.get('ndcg@10'))}, BM25 + generative "
            f"(RRF) {f4(metric(r.get('BM25 + generative (RRF)'), 'ndcg@10'))}. " + source("generative_trained_cpu", cpu))


def block_generative_fusion_sweep(res: Results) -> str:
    """BM25 + the saved constrained run by every fusion method and weight (``generative.py --part fusion-sweep``)."""
    rec = res.get("generative_fusion_sweep")
    if rec is None:
        return missing("`generative_fusion_sweep.json`", "python benchmarks/generative.py --part fusion-sweep "
                       "--run benchmarks/logs/device-2026-12-04/generative_constrained.trec.gz")
    bm25 = rec["bm25_ndcg@10"]
    rows = [[label, f4(r["ndcg@10"]), f"{r['ndcg@10'] - bm25:+.4f}", f4(r["recall@100"])]
            for label, r in rec["rows"].items()]
    verdict = "beats" if rec["best_fused_ndcg@10"] > bm25 else "does not beat"
    return (table([f"BM25 fused with the trained constrained run ({rec['queries']} SciFact test claims)", "nDCG@10",
                   "vs BM25", "R@100"], "lrrr", rows) + "\n\n"
            + f"The best fusion ({f4(rec['best_fused_ndcg@10'])}, {rec['best_fused_ndcg@10'] - bm25:+.5f}) {verdict} "
              f"BM25 ({f4(bm25)}), with every weight "
              "tried on the scored claims themselves (an upper bound: no weight was chosen on held-out claims). "
            + source("generative_fusion_sweep", rec))


KEYS_FILES = (("generative_keys", "test, 300 steps"), ("generative_keys_train", "train claims, 300 steps"),
              ("generative_keys_600steps", "test, 600 steps"), ("generative_keys_base", "test, untrained LM"),
              ("generative_keys_pseudo", "test, 300 steps + first-sentence pseudo-queries"))
"""``generative.py --part keys`` results shown side by side: (file, column label); the first is required."""
KEYS_MODELS = {"generative_keys": "300 steps, the recipe's former budget, on 2 CPU cores",
               "generative_keys_600steps": "600 steps on 2 CPU cores",
               "generative_keys_pseudo": "300 steps with first-sentence pseudo-queries, 2 CPU cores"}  # the trained models: a targets row each


def block_generative_keys(res: Results) -> str:
    """Trained models' constrained beams ranked from each of SEAL's key sets (``generative.py --part keys``)."""
    if res.get("generative_keys") is None:
        return missing("`generative_keys.json`", "python benchmarks/generative.py --part keys --model OUT/model "
                       "--queries 300")
    recs = [(res.get(name), label) for name, label in KEYS_FILES if res.get(name) is not None]
    main = recs[0][0]
    head = ["keys ranked (one decoding per model)"]
    for _, label in recs:
        head += [f"{label}: nDCG@10", "R@100"]
    head += ["keys / test claim (before unigrams)", "smoothing", "beta"]
    rows = []
    for key, r in main["rows"].items():
        row = [key]
        for rec, _ in recs:
            other = rec["rows"].get(key) or {}
            row += [f4(other.get("ndcg@10")), f4(other.get("recall@100"))]
        if "keys" in r:
            row += [n1(r["mean_keys_before_unigrams"]), f"{r['smoothing']:g}", f"{r['beta']:g}"]
        else:
            row += ["–", "–", "–"]
        rows.append(row)
    lines = []
    for rec, label in recs:
        valid = rec["valid"]
        lines.append(f"*{label}*: {rec['queries']} SciFact {rec.get('split', 'test')} claims, full corpus of "
                     f"{rec['docs']:,}; model `{rec['model']}` (weights hash {rec['model_hash']}), constrained beam "
                     f"{rec['beams']}, {valid['valid']:,} of {valid['generated']:,} decoded identifiers valid; "
                     f"decoding {f2(rec['queries_per_second_beams'])} claims/s, with the query and unigram keys "
                     f"scored too (the claim encoded once more, its keys in batches of 64) "
                     f"{f2(rec['queries_per_second_all_keys'])} "
                     f"claims/s on {rec.get('device', 'cpu')}. " + source(next(n for n, lab in KEYS_FILES
                                                                              if lab == label), rec))
    return (table(head, "l" + "r" * (len(head) - 1), rows) + "\n\n" + "\n\n".join(lines))


GRID_TEST_FILES = (("generative_keys_grid_test_300steps", "test, 300 steps (the recipe's former budget)"),
                   ("generative_keys_grid_test", "test, 600 steps on all training claims"),
                   ("generative_keys_grid_test_devmodel", "test, the dev run's model"),
                   ("generative_keys_grid_test_1200steps", "test, 1200 steps on all training claims"))
"""``generative.py --part keys-grid --row CHOSEN`` on the test claims: (file, column label)."""
GRID_TEST_FILES_1200 = (("generative_keys_grid_test_1200steps_dev1200", "test, 1200 steps on all training claims"),
                        ("generative_keys_grid_test_devmodel1200", "test, the 1200-step dev run's model"),
                        ("generative_keys_grid_test_1200steps_unconstrained",
                         "test, 1200 steps, unconstrained decoding (ablation)"))
"""The same, for the setting chosen on the 1200-step dev run (``generative_keys_grid_dev_1200steps``)."""
DEV_GRIDS = (("generative_keys_grid_dev", GRID_TEST_FILES, "600-step dev run"),
             ("generative_keys_grid_dev_1200steps", GRID_TEST_FILES_1200, "1200-step dev run"))
"""Each dev grid (file), the test reads of its choice, and how the targets table names the dev run."""
RECIPE_GRID_TEST = "generative_keys_grid_test_1200steps_dev1200"  # the recipe's weights under the recipe's ranking
FUSED_LABELS = ("minmax", "zscore", "RRF")  # fusion rows of a keys-grid file (not BM25 or the generative run)


def grid_choice(dev: dict[str, Any]) -> tuple[str, str | None]:
    """The ranking setting chosen on the dev claims (their best grid row) and the fusion row chosen there."""
    chosen = dev["best_row"]
    fused = {k: v for k, v in (dev.get("fusion") or {}).get(chosen, {}).items() if k.startswith(FUSED_LABELS)}
    return chosen, max(fused, key=lambda k: fused[k]["ndcg@10"]) if fused else None


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else float("nan")


def block_generative_grid(res: Results, dev_name: str = "generative_keys_grid_dev",
                          test_files: tuple[tuple[str, str], ...] = GRID_TEST_FILES,
                          every_name: str | None = "generative_keys_grid_test_all") -> str:
    """The ranking setting chosen on held-out dev claims (``generative.py --part keys-grid --split dev``, file
    ``dev_name``) and read on the test claims (``--row``, ``test_files``)."""
    dev = res.get(dev_name)
    if dev is None:
        return missing(f"`{dev_name}.json`", "python benchmarks/generative.py --part keys-grid "
                       "--model DEV/model --split dev --dev-queries DEV/dev_queries.json --queries 100 "
                       f"--name {dev_name}")
    chosen, fused_label = grid_choice(dev)
    default = dev["default_row"]
    tests = [(res.get(n), label, n) for n, label in test_files if res.get(n) is not None]
    ranked = sorted(dev["rows"], key=lambda k: -dev["rows"][k]["ndcg@10"])
    shown = list(dict.fromkeys([*ranked[:8], default]))
    every = res.get(every_name) if every_name else None
    columns = tests + ([(every, "test, every setting of the 600-step model (diagnostic)", "")] if every else [])
    head = ["ranking (beams + query n-grams)", "dev nDCG@10", "dev R@100"]
    for _, label, _ in columns:
        head += [f"{label}: nDCG@10", "R@100"]
    rows = []
    for key in shown:
        mark = " (**chosen on dev**)" if key == chosen else " (the default)" if key == default else ""
        row = [key + mark, f4(dev["rows"][key]["ndcg@10"]), f4(dev["rows"][key]["recall@100"])]
        for rec, _, _ in columns:
            r = rec["rows"].get(key) or {}
            row += [f4(r.get("ndcg@10")), f4(r.get("recall@100"))]
        rows.append(row)
    out = table(head, "l" + "r" * (len(head) - 1), rows)
    fused_tests = [t for t in tests if t[0].get("constrained") is not False]  # the ablation is not fused
    frows = []
    for label, key in (("BM25", "BM25"), ("generative, chosen ranking", "generative (constrained)"),
                       (f"fused, chosen on dev: {fused_label}", fused_label)):
        if key is None:
            continue
        row = [label, f4(metric((dev.get("fusion") or {}).get(chosen, {}).get(key), "ndcg@10"))]
        for rec, _, _ in fused_tests:
            row.append(f4(metric((rec.get("fusion") or {}).get(chosen, {}).get(key), "ndcg@10")))
        frows.append(row)
    out += "\n\n" + table(["with BM25", "dev nDCG@10", *(f"{label}: nDCG@10" for _, label, _ in fused_tests)],
                            "l" + "r" * (1 + len(fused_tests)), frows)
    per_value = "; ".join(
        f"{k} " + ", ".join(f"{v:g}: {f4(max(r['ndcg@10'] for r in dev['rows'].values() if r[k] == v))}" for v in vals)
        for k, vals in dev["grid"].items())
    lines = [f"Grid: {', '.join(f'{k} {list(v)}' for k, v in dev['grid'].items())}; {len(dev['rows'])} settings, "
             f"the best 8 on dev shown. The best dev nDCG@10 with each value: {per_value}. *dev*: {dev['queries']} SciFact training claims held out of the training "
             f"run (`{dev['dev_queries_file']}`), full corpus of {dev['docs']:,}; model `{dev['model']}` (weights hash "
             f"{dev['model_hash']}), {dev['valid']['valid']:,} of {dev['valid']['generated']:,} identifiers valid. "
             + source(dev_name, dev)]
    if every is not None:
        t = every["rows"]
        common = [k for k in dev["rows"] if k in t]
        order = sorted(t, key=lambda k: -t[k]["ndcg@10"])
        rho = spearman([dev["rows"][k]["ndcg@10"] for k in common], [t[k]["ndcg@10"] for k in common])
        lines.append(f"*Every setting on the test claims* (`{every['model']}`, weights hash {every['model_hash']}; a "
                     f"diagnostic, not a choice: the best row there is an upper bound): the best of "
                     f"{len(t)} is {f4(t[order[0]]['ndcg@10'])} ({order[0]}); the default "
                     f"{f4(t[every['default_row']]['ndcg@10'])}"
                     + (f"; the setting chosen on dev ranks {order.index(chosen) + 1} of {len(t)} there" if chosen in t
                        else "") + f". Dev and test rank the {len(common)} settings "
                     f"with a Spearman correlation of {rho:.2f}. " + source(str(every_name), every))
    for rec, label, name in tests:
        lines.append(f"*{label}*: {rec['queries']} SciFact {rec['split']} claims; model `{rec['model']}` (weights "
                     f"hash {rec['model_hash']}), {rec['valid']['valid']:,} of {rec['valid']['generated']:,} "
                     f"identifiers valid. " + source(name, rec))
    return out + "\n\n" + "\n\n".join(lines)


def grid_rows(res: Results) -> list[list[str]]:
    """The quality and fusion targets with the ranking chosen on dev claims, one row each per test file of each
    dev grid."""
    out = []
    for dev_name, test_files, dev_label in DEV_GRIDS:
        dev = res.get(dev_name)
        if dev is None:
            continue
        chosen, fused_label = grid_choice(dev)
        for name, label in test_files:
            rec = res.get(name)
            if rec is None:
                continue
            if chosen not in rec["rows"]:
                raise ValueError(f"{name}.json has no row for the setting chosen in {dev_name}.json ({chosen!r}): "
                                 f"rerun it with --row '{chosen}'")
            ndcg = rec["rows"][chosen]["ndcg@10"]
            if rec.get("constrained") is False:  # the ablation: the same ranking over unconstrained beams
                valid = rec["valid"]
                out.append([f"vs an unconstrained-decoding ablation ({label}, the ranking chosen on the "
                            f"{dev_label}'s dev claims)", f"{f4(ndcg)} unconstrained; "
                            f"{100 * valid['valid'] / max(1, valid['generated']):.1f}% of its decoded identifiers "
                            f"exist (`{name}.json`)", f"measured on {rec['queries']} claims"])
                continue
            full = rec["queries"] >= 300
            status = (f"not met ({0.60 - ndcg:.4f} short)" if ndcg < 0.60 else
                      f"met (by {ndcg - 0.60:.4f}, less than {rec['queries']} claims can tell apart)" if full else
                      f"not measured on all 300 claims ({rec['queries']})")
            recipe = " (**the recipe**: `configs/scifact-generative.yaml`)" if name == RECIPE_GRID_TEST else ""
            out.append([f"SciFact test nDCG@10 ≥ 0.60, ranking chosen on the {dev_label}'s dev claims ({label})"
                        + recipe,
                        f"{f4(ndcg)} ({chosen}; the default ranking "
                        f"{f4(rec['rows'][dev['default_row']]['ndcg@10'])}; `{name}.json`)", status])
            fusion = (rec.get("fusion") or {}).get(chosen, {})
            if fused_label in fusion:
                bm25, fused = fusion["BM25"]["ndcg@10"], fusion[fused_label]["ndcg@10"]
                out.append([f"fusion: generative + BM25 vs BM25, weight chosen on the {dev_label}'s dev claims "
                            f"({label})", f"{f4(fused)} ({fused_label}) vs {f4(bm25)}",
                            f"measured; {fused - bm25:+.4f} vs BM25 on {rec['queries']} claims"])
    every = res.get("generative_keys_grid_test_all")
    if every is not None:
        best = max(every["rows"].values(), key=lambda r: r["ndcg@10"])["ndcg@10"]
        out.append(["SciFact test nDCG@10 ≥ 0.60: the best ranking setting tried on the test claims themselves "
                    "(an upper bound, not a choice; the 600-step model)", f"{f4(best)} of {len(every['rows'])} settings "
                    "(`generative_keys_grid_test_all.json`)",
                    "below the target even so" if best < 0.60 else "reached only by choosing on the test claims"])
    return out


GRANULARITY_NAMES = {"text": "abstract n-grams", "title": "titles"}  # generative.query_tasks sources


def _prompt_pairs(rec: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Per granularity: (granularity, the two-prompt model's row, the single-task model's row)."""
    rows = list(rec["rows"].values())
    joint = [r for r in rows if len(rec["models"][r["model"]]["query_tasks"]) > 1]
    single = {r["granularity"]: r for r in rows if len(rec["models"][r["model"]]["query_tasks"]) == 1}
    return [(r["granularity"], r, single[r["granularity"]]) for r in joint if r["granularity"] in single]


def block_generative_prompts(res: Results) -> str:
    rec = res.get("generative_prompts")
    if rec is None:
        return missing("`generative_prompts.json`", "python benchmarks/generative.py --part prompts")
    rows = [[GRANULARITY_NAMES.get(g, g), f4(j.get("ndcg@10")), f4(s.get("ndcg@10")),
             f"{j['ndcg@10'] - s['ndcg@10']:+.4f}", f4(j.get("recall@100")), f4(s.get("recall@100"))]
            for g, j, s in _prompt_pairs(rec)]
    models = "; ".join(f"{label}: {n0(m['train_seconds'])} s, final loss {f2(m['final_loss'])}"
                       for label, m in rec["models"].items())
    return (table([f"identifiers (SciFact test, {rec['queries']} claims, full corpus of {rec['docs']:,})",
                   "one model, two prompts: nDCG@10", "single-task model: nDCG@10", "difference",
                   "one model: R@100", "single-task: R@100"], "lrrrrr", rows) + "\n\n"
            + f"Each model: `{rec['config']}` for {rec['steps']} steps of {rec['batch_size']} claims (+ as many "
              f"indexing pairs; the two-prompt model gets one pair per granularity per claim), then searched "
              f"under each of its prompts at beam {rec['beams']}. Training: {models}. Load average at start: "
              f"{load_label_start(rec)}. " + source("generative_prompts", rec))


def block_generative_targets(res: Results) -> str:
    rec, st = res.get("generative_trained"), res.get("generative_structures")
    if rec is None or st is None:
        return missing("`generative_trained.json` / `generative_structures.json`",
                       "python benchmarks/generative.py --part structures; python benchmarks/generative.py --part trained")
    rows_ = rec["rows"]
    trained, ablation = trained_rows(rows_)
    bm25, fused = rows_.get("BM25 (same claims)"), rows_.get("BM25 + generative (RRF)")
    steps, claims, full = rec["train"]["steps"], rec["queries"], rec["queries"] >= 300
    gen_ndcg, bm25_ndcg, fused_ndcg = trained.get("ndcg@10"), metric(bm25, "ndcg@10"), metric(fused, "ndcg@10")
    scope = "all 300 test claims" if full else f"a slice of {claims} claims"
    if gen_ndcg is not None and gen_ndcg >= 0.60 and full:
        quality = "met"
    else:
        short = f"{0.60 - gen_ndcg:.4f} short" if gen_ndcg is not None else "no number"
        quality = f"not met ({short}" + ("" if full else f"; {claims} claims only") + ")"
    sweep = res.get("generative_fusion_sweep")
    rows = [["valid outputs: 100% of generated identifiers exist",
             f"{100 * trained.get('valid_rate', 0):.1f}% (trained, constrained); "
             f"{100 * ablation.get('valid_rate', 0):.1f}% unconstrained",
             "met" if trained.get("valid_rate") == 1.0 else "not met"],
            ["SciFact test nDCG@10 ≥ 0.60 (all 300 claims, full corpus), ranked from the decoded identifiers alone",
             f"{f4(gen_ndcg)} on {scope} after {steps} steps", quality],
            ["vs BM25 / unconstrained ablation", f"BM25 {f4(bm25_ndcg)}; unconstrained {f4(ablation.get('ndcg@10'))}",
             f"measured on {scope}"],
            ["fusion: generative + BM25 vs BM25", f"{f4(fused_ndcg)} (RRF) vs {f4(bm25_ndcg)}"
             + (f"; the best of every method and weight, tried on the test claims (an upper bound): "
                f"{sweep['best_fused_ndcg@10'] - sweep['bm25_ndcg@10']:+.5f} vs BM25" if sweep else ""),
             "measured; fusion " + ("helps" if (fused_ndcg or 0) > (bm25_ndcg or 0) or (
                 sweep and sweep["best_fused_ndcg@10"] > sweep["bm25_ndcg@10"]) else "does not help")
             + f" at {steps} steps"],
            *keys_rows(res),
            *grid_rows(res),
            prompt_row(res.get("generative_prompts")),
            speed_row(rec, res.get("generative_trained_cpu"), trained),
            ["identifier index build time and size",
             f"{n1(st['suffix_array']['build_seconds'])} s, {n1(st['suffix_array']['bytes'] / 1024 / 1024)} MiB",
             "measured"]]
    return table(["target (issue 9)", "measured", "status"], "lll", rows)


SEAL_KEYS = "beams + query n-grams"  # the recipe's search_keys, the row the targets table reports


def keys_rows(res: Results) -> list[list[str]]:
    """The quality target measured with SEAL's query keys (``generative.py --part keys``), one row per model."""
    out = []
    for name, label in KEYS_FILES:
        rec = res.get(name)
        if rec is None or rec.get("split", "test") != "test" or name not in KEYS_MODELS:
            continue
        r, alone = rec["rows"].get(SEAL_KEYS) or {}, rec["rows"].get("query n-grams, no beams (ablation)") or {}
        beams = rec["rows"].get("beams (the default)") or {}
        full = rec["queries"] >= 300
        ndcg = r.get("ndcg@10")
        status = ("no number" if ndcg is None else f"not met ({0.60 - ndcg:.4f} short)" if ndcg < 0.60 else
                  "met" if full else f"not measured on all 300 claims ({rec['queries']})")
        out.append([f"SciFact test nDCG@10 ≥ 0.60 with SEAL's query keys ({KEYS_MODELS.get(name, label)})",
                    f"{f4(ndcg)} ({SEAL_KEYS}, {rec['queries']} claims; beams alone {f4(beams.get('ndcg@10'))}, "
                    f"query n-grams alone {f4(alone.get('ndcg@10'))}; `{name}.json`)", status])
    return out


def speed_row(rec: dict[str, Any], cpu: dict[str, Any] | None, trained: dict[str, Any]) -> list[str]:
    """The target is queries/s on 2 CPU cores: the CPU run's when the main file is a GPU run's (both shown)."""
    label = f"queries/s, constrained beam {rec['beams']} on 2 CPU cores"
    on_gpu = bool((rec.get("machine") or {}).get("gpu")) and rec.get("device", "cpu") != "cpu"
    if not on_gpu:
        return [label, f2(trained.get("queries_per_second")), "measured"]
    gpu = f"{f2(trained.get('queries_per_second'))} on the lent {rec['machine']['gpu']}"
    if cpu is None:
        return [label, gpu, "not measured on CPU"]
    con = trained_rows(cpu["rows"])[0]
    return [label, f"{f2(con.get('queries_per_second'))} ({cpu['train']['steps']}-step model); {gpu}", "measured"]


def prompt_row(rec: dict[str, Any] | None) -> list[str]:
    label = "prompt learning: one model, two granularities vs two models"
    if rec is None:
        return [label, "–", "not measured"]
    got = "; ".join(f"{GRANULARITY_NAMES.get(g, g)} {f4(j['ndcg@10'])} vs {f4(s['ndcg@10'])}" for g, j, s in _prompt_pairs(rec))
    return [label, f"{got} ({rec['queries']} claims, {rec['steps']} steps each)", "measured"]


def block_readme_demo(res: Results) -> str:
    """README's demo table and wall times (README.md may carry this block)."""
    try:
        name, rec = res.need("demo")
    except MissingResult:
        return missing("`demo.json`", "python benchmarks/demo.py")
    rows = demo_rows(rec)
    quick = res.get("demo_quick")
    quick_text = (f" `uniret demo --quick` ({demo_scope(quick)}"
                  + (f", `{demo_backend(quick)}` backend" if demo_backend(quick) != demo_backend(rec) else "")
                  + f") took **{n0(quick['wall_seconds'])} s** "
                  f"({'within' if quick['wall_seconds'] < 120 else 'over'} its 2-minute target; {where_when(quick)}"
                  + (f", load average {' / '.join(f'{x:.1f}' for x in quick['load_average_before'])} at the start"
                     if quick.get("load_average_before") else "") + ", `demo_quick.json`)." if quick else "")
    stages = rec.get("stages") or {}
    stage_text = (" Stages (s): " + ", ".join(f"{k} {n0(v)}" for k, v in stages.items()) + "." if stages else "")
    cpu = rec.get("cpu_seconds")
    cpu_text = (f" The full demo used {n0(cpu['user'] + cpu['system'])} CPU seconds (user + system), i.e. at "
                f"least {n0((cpu['user'] + cpu['system']) / 2)} s on 2 cores with nothing else running." if cpu else "")
    before = rec.get("load_average_before")
    load_text = (f"Load average {' / '.join(f'{x:.1f}' for x in before)} at the start, {load_label(rec)} at the end"
                 if before else f"Load average at the end: {load_label(rec)}")
    note = f" {rec['note'][0].upper()}{rec['note'][1:]}." if rec.get("note") else ""
    wl = rec.get("win_loss")
    wl_text = (f"Trained vs zero-shot dense, per query ({rec.get('win_loss_metric', 'ndcg@10')}): {wl['wins']} wins, "
               f"{wl['losses']} losses, {wl['ties']} ties. " if wl else "")
    not_shown = " ".join(f"Not shown: {k}, {v}." for k, v in (rec.get("not_shown") or {}).items())
    return (table(["system", "ndcg@10", "recall@100", "mrr@10", "map@100"], "lrrrr", rows) + "\n\n"
            + wl_text + not_shown + ("\n\n" if wl_text or not_shown else "")
            + f"Measured by `python benchmarks/demo.py` on {where_when(rec)} (`benchmarks/results/{name}.json`): "
              f"`uniret demo` (`{demo_backend(rec)}` backend) took **{n0(rec['wall_seconds'])} s** wall in a fresh process"
              + (" (the 15-minute target on 2 cores is met)." if rec["wall_seconds"] <= 900 else
                 ": over the 15-minute target on 2 cores in this run.") + stage_text
            + f"{cpu_text} {load_text} (the machine is shared; alone it is faster).{note}{quick_text}")


def block_readme_recipe(res: Results) -> str:
    """README's one-sentence dense recipe result (README.md may carry this block)."""
    try:
        _, rec = res.need("scifact_dense_recipe")
    except MissingResult:
        return missing("`scifact_dense_recipe.json`", "python benchmarks/dense_recipe.py --rows recipe")
    st = []
    for label, names in (("with its default learning rate", ("scifact_dense_st_lr5e5", "train_ablation_100_st_lr5e5")),
                         ("at ours", ("scifact_dense_st_lr1e4", "train_ablation_100_st_lr1e4"))):
        try:
            _, r = res.need(*names)
            other = "" if machine_label(r) == machine_label(rec) else f" (on {where_when(r)})"
            st.append(f"{f4(dense_row(r)['test']['ndcg@10'])} {label}{other}")
        except MissingResult:
            st.append(f"not measured yet {label}")
    return (f"the dense recipe reaches nDCG@10 {f4(rec['test']['ndcg@10'])} on SciFact test (dev "
            f"{f4(metric(rec.get('dev'), 'ndcg@10'))}); training took {n0(rec['train_wall_seconds'] / 60)} min and the "
            f"evaluation {n0(rec['eval_wall_seconds'] / 60)} min on {where_when(rec)} "
            f"(sentence-transformers' own trainer at the same budget: {', '.join(st)}). "
            "Source: `benchmarks/results/scifact_dense_*.json`.")


ENGINE_LABELS = {"pisa": "PISA (**default**, exact)", "lucene": "uniret `lucene` engine (Anserini "
                 "SimpleImpactSearcher)", "pyserini_impact_searcher": "pyserini `LuceneImpactSearcher.search`",
                 "pyserini_impact_searcher_batch": "pyserini `LuceneImpactSearcher.batch_search` (1 thread)",
                 "pisa_maxscore": "PISA, MaxScore (exact)", "pisa_block_max_wand": "PISA, block-max WAND (exact)",
                 "pisa_block_max_maxscore": "PISA, block-max MaxScore (exact)",
                 "seismic": "Seismic (approximate)"}


def block_sparse_engines(res: Results) -> str:
    """The sparse family: SPLADE-tiny zero-shot, engine speed at identical top-10, BM25 on PISA."""
    try:
        name, rec = res.need("sparse_engines")
    except MissingResult:
        return missing("`sparse_engines.json`", "python benchmarks/sparse_engines.py")
    e = rec["effectiveness"]
    out = [table(["SPLADE-tiny zero-shot, SciFact test (300 queries, 5,183 documents)", "nDCG@10", "R@100",
                  "reference nDCG@10", "non-zeros / doc", "non-zeros / query"], "lrrrrr",
                 [[f"uniret `sparse` (max length {e['max_length']}, {e['pooling']} pooling, weights x{e['scale']} "
                   "rounded)", f4(e["ndcg@10"]), f4(e["recall@100"]), f4(e["reference_ndcg@10"]),
                   n1(e["mean_nnz_per_doc"]), n1(e["mean_nnz_per_query"])]])]
    base = max((rec["engines"][k] for k in ("pyserini_impact_searcher", "pyserini_impact_searcher_batch")
                if k in rec["engines"]), key=lambda r: r["qps"])
    rows = []
    for key, label in ENGINE_LABELS.items():
        r = rec["engines"].get(key)
        if r is None:
            continue
        rows.append([label, n0(r["qps"]), f2(r["qps"] / base["qps"]), f"{r['exact_top10_share'] * 100:.1f}%",
                     f4(r["recall@10_vs_exact"]), f4(r["ndcg@10"])])
    s = rec["engine_settings"]
    out.append(table(["engine (same quantised vectors, 300 queries encoded beforehand, top 10, 1 thread)", "q/s",
                      "x pyserini (faster mode)", "queries with the exact top-10", "recall@10 vs exact", "nDCG@10"], "lrrrrr", rows))
    out.append(f"Exact = the brute-force integer dot product; a top-10 is exact when its scores and every document "
               f"above the 10th score match (order within ties free). {rec['repeat']} timed passes after a warm-up; "
               f"PISA `{s['pisa']['algorithm']}`, Seismic query_cut {s['seismic']['query_cut']}, heap_factor "
               f"{s['seismic']['heap_factor']}. Non-zeros before quantisation: "
               f"{n1(e['mean_nnz_per_doc_unquantised'])} / doc, {n1(e['mean_nnz_per_query_unquantised'])} / query.")
    scaled = rec.get("query_scales") or {}
    if scaled:
        rows = []
        for scale, q in scaled.items():
            faster = max(q["pyserini_impact_searcher"]["qps"], q["pyserini_impact_searcher_batch"]["qps"])
            rows.append([f"x{scale}", n0(q["sum_of_query_weights"]), n0(q["pisa"]["qps"]), n0(faster),
                         f2(q["pisa"]["speedup_vs_pyserini"]), f"{q['pisa']['exact_top10_share'] * 100:.1f}%",
                         f4(q["pisa"]["ndcg@10"]), f"{q['pisa']['same_top10_set_as_query_scale_100'] * 100:.1f}%"])
        out.append(table(["queries quantised at (documents x100; `--query-scale`)", "sum of query weights",
                          "PISA q/s", "pyserini q/s (faster mode)", "PISA x pyserini", "PISA exact top-10",
                          "nDCG@10", "same top-10 set as x100"], "lrrrrrrr", rows))
        out.append("Both engines get the same coarser queries; pyserini's cost barely moves, PISA's falls with the "
                   "sum of the query weights (its binding passes a term of weight w as w copies).")
    th = rec.get("threads")
    if th:
        n = th["threads"]
        labels = {"pisa": f"PISA (**default**, `{th.get('pisa_algorithm', s['pisa']['algorithm'])}`: "
                          f"{th['pisa_threads_used']} thread"
                          + ("" if th["pisa_threads_used"] == 1 else "s") + ")",
                  "pisa_maxscore": f"PISA, MaxScore ({n} threads)", "lucene": f"uniret `lucene` engine ({n} threads)",
                  "seismic": f"Seismic ({n} threads, approximate)",
                  "pyserini_impact_searcher_batch_threads": f"pyserini `batch_search` ({n} threads)"}
        rows = [[label, n0(th["engines"][key]["qps"]), f2(th["engines"][key]["speedup_vs_pyserini_threads"]),
                 f"{th['engines'][key]['exact_top10_share'] * 100:.1f}%", f4(th["engines"][key]["ndcg@10"])]
                for key, label in labels.items() if key in th["engines"]]
        out.append(table([f"all {n} cores: each engine as the sparse index searches a batch (`threads={n}`)", "q/s",
                          f"x pyserini `batch_search` ({n} threads)", "queries with the exact top-10", "nDCG@10"],
                         "lrrrr", rows))
        if th["pisa_threads_used"] == 1:
            out.append("PISA's term-at-a-time answers with one thread whatever is asked (its binding shares one "
                       "accumulator between threads; see \"Which PISA algorithm\"), so on all cores the default "
                       "engine keeps its one-thread speed while pyserini gains its second core.")
    b = rec.get("bm25_on_pisa")
    if b:
        rows = [["uniret `bm25` (Lucene via pyserini)", n0(b["lucene_qps"]), "–", f4(b["lucene_ndcg@10"]), "–", "–"],
                ["bm25s", n0(b["bm25s_qps"]), "1.00", f4(b["bm25s_ndcg@10"]), "–", "–"]]
        for key, label in (("pisa_bm25_scorer", "PISA, its own BM25 scorer on Lucene's tokens"),
                           ("pisa_lucene_impacts", "PISA, Lucene's BM25 precomputed as impacts "
                                                   f"(x{b['impact_scale']})")):
            r = b[key]
            rows.append([label, n0(r["qps"]), f2(r["ratio_over_bm25s"]), f4(r["ndcg@10"]),
                         f"{r['ndcg_gap_vs_lucene']:+.4f}", f"{r['same_top10_set_as_lucene_share'] * 100:.1f}%"])
        out.append(table([f"BM25 on SciFact ({n0(b['queries'])} queries, top {b['k']}, {b['threads']} thread, "
                          "query analysis included)", "q/s", "x bm25s", "nDCG@10 (test)", "vs Lucene",
                          "same top-10 set as Lucene"], "lrrrrr", rows))
    pisa = rec["engines"].get("pisa", {})
    repro = "met" if abs(e["ndcg@10"] - e["reference_ndcg@10"]) <= 0.005 else "not met"
    targets = [f"SPLADE-tiny reproduces the reference (within 0.005): {repro} ({f4(e['ndcg@10'])} vs "
               f"{f4(e['reference_ndcg@10'])})",
               f"default engine >= 10x pyserini's impact searcher (its faster mode) at identical top-10: "
               f"{'met' if pisa and pisa['qps'] >= 10 * base['qps'] and pisa['exact_top10_share'] == 1 else 'not met'}"
               f" ({f2(pisa.get('qps', 0) / base['qps'])}x, exact top-10 on "
               f"{pisa.get('exact_top10_share', 0) * 100:.1f}% of queries, queries at the default x100"
               + "".join(f"; {f2(q['pisa']['speedup_vs_pyserini'])}x with `--query-scale {sc}`"
                         for sc, q in scaled.items()) + ")"]
    if b:
        best = max(("pisa_bm25_scorer", "pisa_lucene_impacts"), key=lambda k: b[k]["ndcg@10"])
        r = b[best]
        within = abs(r["ndcg_gap_vs_lucene"]) <= 0.002
        targets.append(f"PISA serves BM25 within 0.002 nDCG@10 of Lucene: {'met' if within else 'not met'} "
                       f"({best.replace('_', ' ')}: {r['ndcg_gap_vs_lucene']:+.4f})"
                       + (f", and >= 1x bm25s: {'met' if r['ratio_over_bm25s'] >= 1 else 'not met'} "
                          f"({f2(r['ratio_over_bm25s'])}x)" if within else ""))
    out.append("Targets: " + "; ".join(targets) + ".")
    out.append(source(name, rec))
    return "\n\n".join(out)


def block_pisa_algorithms(res: Results) -> str:
    """PISA's exact algorithms on SPLADE vectors by corpus size (the rule behind the ``auto`` default)."""
    try:
        name, rec = res.need("pisa_algorithms")
    except MissingResult:
        return missing("`pisa_algorithms.json`", "python benchmarks/pisa_algorithms.py")
    algorithms = list(rec["rows"][0]["qps"])
    rows = []
    for r in rec["rows"]:
        exact = all(v == 1.0 for v in r["same_top10_scores_as_maxscore"].values())
        rows.append([n0(r["docs"]), n0(r["postings_per_query"])] + [n0(r["qps"][a]) for a in algorithms]
                    + [f2(r["qps"]["ranked_or_taat"] / r["qps"]["maxscore"]), "yes" if exact else "no"])
    out = [table(["documents", "postings / query"] + [f"`{a}` q/s" for a in algorithms]
                 + ["TAAT / MaxScore", "same top-10 scores"], "r" * (len(algorithms) + 4), rows)]
    out.append(f"SPLADE-tiny vectors of SciFact ({rec['queries']} test queries, {n1(rec['mean_terms_per_query'])} "
               f"terms per query), top {rec['k']}, {rec['threads']} thread, {rec['repeat']} timed passes after a "
               "warm-up; beyond 5,183 documents the corpus is SciFact repeated with jittered weights.")
    threaded = [r for r in rec["rows"] if r.get("threads")]
    if threaded:
        trows = [[n0(r["docs"]), n0(r["qps"]["maxscore"]), n0(r["threads"]["qps"]["maxscore"]),
                  f"{100 * r['threads']['same_answer_as_one_thread']['maxscore']:.1f}%",
                  n0(r["qps"]["ranked_or_taat"]), n0(r["threads"]["qps"]["ranked_or_taat"]),
                  f"{100 * r['threads']['same_answer_as_one_thread']['ranked_or_taat']:.1f}%"] for r in threaded]
        t = threaded[0]["threads"]["threads"]
        out.append(table(["documents", "`maxscore` q/s, 1 thread", f"{t} threads",
                          f"answered as with 1 thread ({t} threads)", "`ranked_or_taat` q/s, 1 thread",
                          f"{t} threads (unsafe)", f"answered as with 1 thread ({t} threads)"], "rrrrrrr", trows))
        out.append("With several threads, pyterrier-pisa's term-at-a-time query function shares one accumulator "
                   "between its threads, and most queries are answered wrongly: uniret answers "
                   "term-at-a-time with one thread whatever `threads` asks (the unsafe column lifts that guard "
                   "to measure it), and MaxScore, which keeps no state between queries, with the index's threads.")
    codecs = rec.get("encodings")
    if codecs:
        crow = [[f"`{c}`" + (" (default)" if c == rec.get("default_encoding") else ""), n0(q),
                 f"{codecs['index_bytes'][c] / 1e6:.1f}"] for c, q in codecs["qps"].items()]
        out.append(table([f"posting-list codec ({n0(codecs['docs'])} documents, `{codecs['algorithm']}`, interleaved "
                          "rounds)", "q/s", "index MB"], "lrr", crow))
    scales = rec.get("query_scales")
    if scales:
        first = scales["rows"][0]
        srow = [[f"x{s['query_scale']:g}", n0(s["mean_query_weight_sum"]), n1(s["mean_terms_per_query"]), n0(s["qps"]),
                 f2(s["qps"] / first["qps"]), f"{100 * s['same_top10_set_as_first_scale']:.1f}%", f4(s["ndcg@10"])]
                for s in scales["rows"]]
        out.append(table([f"query weights quantised at ({n0(scales['docs'])} documents at x"
                          f"{scales['document_scale']}, `{scales['algorithm']}`, interleaved rounds)",
                          "sum of query weights", "terms / query", "q/s", f"x the x{first['query_scale']:g} q/s",
                          f"same top-10 set as x{first['query_scale']:g}", "nDCG@10"], "lrrrrrr", srow))
        out.append("pyterrier-pisa hands PISA a query term of integer weight w as w repetitions of the term, and "
                   "PISA counts them back into a weight: a query costs in proportion to the sum of its weights "
                   "before any posting is read. The engines serve queries at x"
                   f"{first['query_scale']:g}, as the documents.")
    out.append(source(name, rec))
    return "\n\n".join(out)


def block_sparse_pruning(res: Results) -> str:
    """Top-k pruning at inference (``--top-k``): quality, terms, PISA speed and size per K (``sparse_pruning.py``)."""
    try:
        name, rec = res.need("sparse_pruning")
    except MissingResult:
        return missing("`sparse_pruning.json`", "python benchmarks/sparse_pruning.py")
    rows = [[n0(r["top_k"]) if r["top_k"] else "none (unpruned)", f4(r["ndcg@10"]), f4(r["recall@100"]),
             f"{100 * r['same_top10_set_as_unpruned']:.1f}%", n1(r["terms_per_document"]), n1(r["terms_per_query"]),
             n0(r["qps"]), f2(r["qps_vs_unpruned"]), n1(r["index_mb"])] for r in rec["rows"]]
    eng = rec["engine"]
    out = [table(["`--top-k`", "nDCG@10", "R@100", "same top-10 set as unpruned", "terms / document",
                  "terms / query", "PISA q/s", "x unpruned q/s", "PISA index MB"], "lrrrrrrrr", rows),
           f"{rec['model']} at max length {rec['max_length']} on {rec['data']} ({n0(rec['docs'])} documents, "
           f"{rec['queries']} test queries), encoded once; each K prunes {rec['pruned']} "
           "(`uniret.retriever.splade.prune_vectors`), quantised x100; PISA "
           f"`{eng['pisa']}`, {eng['threads']} thread, top {eng['k']}, {eng['repeat']} interleaved timed rounds after "
           "a warm-up; nDCG@10 and R@100 over the top 1000.",
           source(name, rec)]
    return "\n\n".join(out)


SPARSE_ROWS = (  # results file -> label
    ("scifact_sparse_splade", "encoder SPLADE (`configs/scifact-splade.yaml`, from SPLADE-tiny; learning rate 3e-4)"),
    ("scifact_sparse_inference_free", "inference-free, IDF-aware FLOPS (`configs/scifact-splade-inference-free.yaml`)"),
    ("scifact_sparse_inference_free_plain", "inference-free, plain FLOPS (same, `flops.idf_aware=false`)"),
    ("scifact_sparse_splade_trained_teacher",
     "encoder SPLADE at 1e-4, teachers BM25 + the trained dense recipe model (instead of MiniLM)"),
    ("scifact_sparse_inference_free_trained_teacher",
     "inference-free, IDF-aware FLOPS, teachers BM25 + the trained dense recipe model"),
    ("scifact_sparse_splade_lr1e4", "encoder SPLADE, learning rate 1e-4 (the recipe until 2026-12-02)"),
    ("scifact_sparse_splade_dev128", "encoder SPLADE, the same config run with dev and alphas at 128 (before 2026-12-02 17:00)"),
    ("scifact_sparse_splade_lr6e4", "encoder SPLADE, learning rate 6e-4"),
    ("scifact_sparse_splade_len256", "encoder SPLADE, trained at length 256 (config: 128)"),
    ("scifact_sparse_inference_free_lr3e4", "inference-free, IDF-aware FLOPS, learning rate 3e-4 (config: 1e-4)"),
    ("scifact_sparse_splade_100steps", "encoder SPLADE, 100 steps (the config until 2026-12-02 23:59)"),
    ("scifact_sparse_inference_free_200steps", "inference-free, IDF-aware FLOPS, 200 steps (config: 100)"),
    ("scifact_sparse_inference_free_len256", "inference-free, IDF-aware FLOPS, trained at length 256 (config: 128)"),
    ("scifact_sparse_inference_free_splade_teacher",
     "inference-free, IDF-aware FLOPS, teachers BM25 + MiniLM + SPLADE-tiny (config: BM25 + MiniLM)"),
    ("scifact_sparse_inference_free_learned_query",
     "inference-free, IDF-aware FLOPS, query weights learned from the IDF (`model.query_weights: learned`)"),
    ("scifact_sparse_inference_free_from_splade",
     "inference-free, IDF-aware FLOPS, document encoder from the 100-step encoder SPLADE (config: from SPLADE-tiny)"),
    ("scifact_sparse_inference_free_from_splade200",
     "inference-free, IDF-aware FLOPS, document encoder from the 200-step encoder SPLADE (the config's; alphas to 0.4)"),
    ("scifact_sparse_inference_free_plain_from_splade200",
     "inference-free, plain FLOPS, document encoder from the 200-step encoder SPLADE (same two stages)"),
    ("scifact_sparse_splade_splade_teacher",
     "encoder SPLADE, teachers SPLADE-tiny + MiniLM (config: BM25 + MiniLM), alpha by the out-of-domain guard"),
    ("scifact_sparse_splade_frozen_query",
     "encoder SPLADE, query encoder frozen at SPLADE-tiny (`model.query_encoder: frozen`), alpha by the out-of-domain guard"),
    ("scifact_sparse_decoder_echo_t10", "SmolLM2-135M SPLADE, echo (`configs/scifact-splade-decoder.yaml`; H200)"),
    ("scifact_sparse_decoder_bidirectional_t10",
     "SmolLM2-135M SPLADE, bidirectional (same, `model.variant=bidirectional`; H200)"),
    ("scifact_sparse_decoder_echo_t1", "SmolLM2-135M SPLADE, echo, InfoNCE temperature 1, FLOPS 1e-3 (H200)"),
    ("scifact_sparse_decoder_bidirectional_t1",
     "SmolLM2-135M SPLADE, bidirectional, InfoNCE temperature 1, FLOPS 1e-3 (H200)"),
    ("scifact_sparse_decoder_echo_t10solo", "SmolLM2-135M SPLADE, echo, the config alone on the GPU (H200)"),
    ("scifact_sparse_decoder_bidirectional",
     "SmolLM2-135M SPLADE, bidirectional, the earlier config (background 0.25 sd), 2 CPU cores"),
)
SPARSE_TARGETS = {"scifact_sparse_splade": 0.70, "scifact_sparse_inference_free": 0.679,
                  "scifact_sparse_inference_free_from_splade200": 0.679,
                  "scifact_sparse_decoder_echo_t10": 0.679, "scifact_sparse_decoder_bidirectional_t10": 0.679}


SPARSE_OOD_ROWS = {  # sparse_ood.py row name -> (label, the results file of its SciFact test number, key path)
    "splade-tiny": ("SPLADE-tiny (zero-shot; where every trained row starts)", "sparse_engines",
                    ("effectiveness", "ndcg@10")),
    "encoder-splade": ("encoder SPLADE (`configs/scifact-splade.yaml`)", "scifact_sparse_splade", ("test", "ndcg@10")),
    "inference-free": ("inference-free, IDF-aware FLOPS, two stages (from the encoder SPLADE)",
                       "scifact_sparse_inference_free_from_splade200", ("test", "ndcg@10")),
    "inference-free-plain": ("inference-free, plain FLOPS, same two stages",
                             "scifact_sparse_inference_free_plain_from_splade200", ("test", "ndcg@10")),
    "bm25": ("BM25 (Lucene through pyserini)", "sparse_engines", ("bm25_on_pisa", "lucene_ndcg@10")),
}


def block_sparse_ood(res: Results, name: str = "sparse_ood") -> str:
    """Trained sparse models on collections they never saw, against SPLADE-tiny (``sparse_ood.py``); a row
    scored in domain too (``--in-domain``) shows that number instead of its results file's."""
    rec = res.get(name)
    if rec is None:
        return missing("sparse_ood.json", "python benchmarks/sparse_ood.py --model ... --base splade-tiny --bm25")
    cols = list(rec["collections"])
    base = rec["base"]
    rows = []
    for row_name, row in rec["rows"].items():
        label, scifact_file, path = SPARSE_OOD_ROWS.get(row_name, (row_name, None, ()))
        if row_name.startswith("alpha-"):
            label = f"encoder SPLADE, WiSE-FT α = {row_name[6:]} with SPLADE-tiny" + (
                " (the config's choice)" if row_name == "alpha-0.8" else "")
        value: Any = res.get(scifact_file) if scifact_file else None
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if row.get("in_domain"):
            value = row["in_domain"]["ndcg@10"]
        cells = [label + (" **base**" if row_name == base else ""), f4(value)]
        for c in cols:
            cells.append(f4(row["metrics"][c]["ndcg@10"]))
            delta = row.get("delta_vs_base", {}).get(c)
            cells.append("–" if row_name == base or delta is None else f"{delta['ndcg@10']:+.4f}")
        rows.append(cells)
    own = "measured here" if any(r.get("in_domain") for r in rec["rows"].values()) else "its results file"
    header = ["model", f"SciFact test nDCG@10 ({own})"]
    for c in cols:
        header += [f"{c} nDCG@10", "Δ vs base"]
    out = [table(header, "l" + "r" * (len(header) - 1), rows)]
    worst = {r: min(d[c]["ndcg@10"] for c in d) for r, d in
             ((r, row.get("delta_vs_base", {})) for r, row in rec["rows"].items() if row.get("kind") == "sparse")
             if d and r != base}
    out.append(f"Full test corpora of each collection, max length {rec['max_length']}, through `uniret eval --retriever "
               "sparse` (the pipeline's out-of-domain evaluation, `uniret.train.ood.evaluate_folder`); an "
               "inference-free model keeps the query weights it was saved with (SciFact's IDF). Worst drop against "
               "the base per trained row: " + "; ".join(f"{SPARSE_OOD_ROWS.get(r, (r,))[0].split(' (')[0]} {v:+.4f}"
                                                for r, v in worst.items()) + ".")
    out.append(source(name, rec))
    return "\n\n".join(out)


def block_sparse_guarded(res: Results, name: str, trained: str) -> str:
    """A sparse recipe run trained with ``eval.ood`` (``sparse_recipe.py --set eval.ood=[...]``): each WiSE-FT
    alpha's dev score and out-of-domain drop as the run measured them, the guarded rule's choice and SciFact test
    for the chosen alpha, beside the config's own alphas (``sparse_ood_wise_ft.json``, dev from
    ``scifact_sparse_splade.json``)."""
    rec = res.get(name)
    if rec is None:
        return missing(f"`{name}.json`", "python benchmarks/sparse_recipe.py --rows splade --set 'eval.ood=[...]'")
    interp = rec["interpolation"]
    sets = list(interp["candidates"][0]["ood"])
    base = {s: interp["candidates"][0]["ood"][s] + interp["candidates"][0]["ood_drops"][s] for s in sets}
    wise, config = res.get("sparse_ood_wise_ft") or {"rows": {}}, res.get("scifact_sparse_splade") or {}
    config_dev = {c["alpha"]: c["dev"] for c in config.get("interpolation", {}).get("candidates", [])}
    base_test = wise["rows"].get("splade-tiny", {}).get("in_domain", {}).get("ndcg@10")
    header = ["model", "dev nDCG@10"] + [h for n in sets for h in (f"{n} nDCG@10", "Δ vs base")] + ["SciFact test"]
    rows = [["SPLADE-tiny (base)", "–"] + [c for s in sets for c in (f4(base[s]), "–")] + [f4(base_test)]]
    for c in interp["candidates"]:
        a = c["alpha"]
        chosen = a == interp["chosen"]
        rows.append([f"{trained}, WiSE-FT α = {a:g}" + (" **chosen**" if chosen else ""), f4(c["dev"])]
                    + [x for s in sets for x in (f4(c["ood"][s]), f"{-c['ood_drops'][s]:+.4f}")]
                    + [f4(rec["test"]["ndcg@10"]) if chosen else "–"])
    for row_name, row in wise["rows"].items():
        if row_name.startswith("alpha-") and set(row.get("metrics", {})) >= set(sets):
            a = float(row_name[6:])
            rows.append([f"the config (teachers BM25 + MiniLM), WiSE-FT α = {a:g}", f4(config_dev.get(a))]
                        + [x for s in sets for x in (f4(row["metrics"][s]["ndcg@10"]),
                                                     f"{row['delta_vs_base'][s]['ndcg@10']:+.4f}")]
                        + [f4(row.get("in_domain", {}).get("ndcg@10"))])
    out = [table(header, "l" + "r" * (len(header) - 1), rows),
           f"This run's rows were measured by the training run itself (`eval.ood`): full test corpora at max length "
           f"{rec['config_resolved']['eval']['ood_max_length']}, the base model before training and each alpha "
           f"after. Rule: {interp['rule']}; chose α = {interp['chosen']:g}. SciFact test: the chosen alpha only "
           "(`uniret eval`, full corpus). The config's rows: `sparse_ood_wise_ft.json` (the same collections, "
           f"length and evaluation; dev: `scifact_sparse_splade.json`). {rec.get('note', '')}".rstrip(),
           source(name, rec)]
    return "\n\n".join(out)


def block_sparse_ood_sides(res: Results) -> str:
    """Which side of a trained sparse model forgets: its query and document encoders crossed with the base's
    (``sparse_ood_sides.py``), nDCG@10 per collection with the change against base/base."""
    try:
        name, rec = res.need("sparse_ood_sides")
    except MissingResult:
        return missing("`sparse_ood_sides.json`", "python benchmarks/sparse_ood_sides.py --model MODEL")
    cols = list(rec["collections"])
    header = ["queries encoded by", "documents encoded by"] + [h for c in cols for h in (f"{c} nDCG@10", "Δ")]
    first = rec["collections"][cols[0]]["rows"]
    rows = []
    for key, row in first.items():
        cells = [row["queries"], row["documents"]]
        for c in cols:
            both = rec["collections"][c]["rows"]
            value = both[key]["ndcg@10"]
            base = both["queries base, documents base"]["ndcg@10"]
            cells += [f4(value), "–" if key == "queries base, documents base" else f"{value - base:+.4f}"]
        rows.append(cells)
    models = rec["models"]
    out = [table(header, "ll" + "r" * (len(header) - 2), rows),
           f"base: `{models['base']}`; trained: `{models['trained']}`. Test splits, full corpora, max length "
           f"{rec['max_length']}, {rec['engine']}; each model encodes each collection once and every query "
           f"encoder searches every document index. {rec.get('note', '')}".rstrip(),
           source(name, rec)]
    return "\n\n".join(out)


def block_sparse_recipe(res: Results) -> str:
    """Trained sparse models on SciFact test (full corpus), with their sparsity; hybrid; the decoder's cost."""
    rows, sources, notes = [], [], []
    lengths = set()  # test max lengths
    row_notes: list[str] = []
    for name, label in SPARSE_ROWS:
        rec = res.get(name)
        if rec is None:
            rows.append([label, "–", "–", "–", "–", "–", f"≥ {SPARSE_TARGETS[name]}" if name in SPARSE_TARGETS
                         else "–", "not measured"])
            continue
        sp = rec["sparsity"]
        lengths.add(rec.get("eval_max_length", 256))  # rows before inference_max_length: --max-length 256
        m = rec["config_resolved"]["model"]
        dev_length = m.get("inference_max_length") or m["max_length"]
        target = SPARSE_TARGETS.get(name)
        ndcg = metric(rec["test"], "ndcg@10")
        verdict = "–" if target is None else ("met" if ndcg is not None and ndcg >= target else "not met")
        dev = metric(rec.get("dev"), "ndcg@10")
        rows.append([label, f4(ndcg), f"{f4(dev)} ({dev_length})" if dev is not None else "–",
                     f4(metric(rec["test"], "recall@100")),
                     n1(sp["terms_per_document"]), n1(sp["terms_per_query"]),
                     f"≥ {target}" if target is not None else "–", verdict])
        budget = f"{rec['steps']} steps x {rec['batch_size']}"
        if rec.get("time_limited"):  # stopped by trainer.max_seconds: the steps it trained, of those scheduled
            budget = f"{rec['steps_trained']} of {rec['steps']} steps x {rec['batch_size']} (time budget)"
        notes.append(f"{label.split(' (')[0]}: {budget}, training {n0(rec['train_seconds'])} s, evaluation "
                     f"{n0(rec['eval_wall_seconds'])} s")
        sources.append(source(name, rec))
        if rec.get("note"):
            row_notes.append(f"- {label}: {rec['note']}")
    length = "/".join(str(n) for n in sorted(lengths)) or "256"
    out = [table([f"SciFact test, full corpus, max length {length}", "nDCG@10", "dev nDCG@10 (max length)", "R@100",
                  "non-zeros / doc (quantised)", "non-zeros / query", "target", ""], "lrrrrrrl", rows)]
    if notes:
        out.append("Dev: the 100 held-out training queries over the full corpus, at the length in brackets: the "
                   "length the pipeline evaluates dev and chooses the WiSE-FT alpha at (`model.inference_max_length`; "
                   "before that setting existed, the training length `model.max_length`).")
        if row_notes:
            out.append("Row notes (from the results files):\n\n" + "\n".join(row_notes))
        out.append("Budgets and wall times: " + "; ".join(notes) + ". Training time is the run's own "
                   "(`train_result.json`): a command rerun on a finished run directory evaluates without training "
                   "again, so a results file's UTC span can cover the evaluation only; rows ran on different machines (the "
                   "raw lines name each). Training records: every row's came from the recipe's record stage (MiniLM "
                   "mining, BM25 + MiniLM soft labels), run by the row itself or by an earlier row and passed with "
                   "`--records`, except in the two trained-teacher rows, which mined and scored their own records "
                   "with BM25 and the trained dense recipe model (`runs/recipe13/recipe/model`, SciFact test 0.7730, "
                   "trained on the same train split minus the same dev queries) as teachers (`--set teachers...`).")
    hyb = res.get("scifact_sparse_hybrid")
    if hyb is not None:
        hrows = [[k, f4(v["ndcg@10"]), f4(v["recall@100"])] for k, v in hyb["rows"].items()]
        sel = hyb.get("dev_selection")
        out.append(table(["hybrid (runs fused by `uniret.scores.fuse_runs`; equal weights unless chosen on dev)",
                          "nDCG@10", "R@100"], "lrr", hrows))
        if sel:
            sweeps = "; ".join(f"{norm}: " + ", ".join(f"{w} {v:.3f}" for w, v in sel[norm]["dev_ndcg@10"].items())
                               for norm in ("minmax", "zscore") if norm in sel)
            out.append(f"Weights chosen on the {sel['dev_queries']} dev queries (held out of training; full corpus), "
                       f"as the weight of {sel['minmax']['weight_of']}; dev nDCG@10 per weight: {sweeps}.")
        out.append(f"Fusion beats the best single run: {'yes' if hyb['fusion_beats_best_single'] else 'no'} "
                   f"({f4(hyb['best_fused_ndcg@10'])} vs {f4(hyb['best_single_ndcg@10'])}).")
        sources.append(source("scifact_sparse_hybrid", hyb))
    cost = res.get("sparse_decoder_cost")
    if cost is not None:
        crow = [[k, f2(v["docs_per_second"]), f"{v['slowdown_vs_minilm']:.1f}x",
                 n0(v["projected_scifact_encode_seconds"]), n0(v.get("train_step_seconds")),
                 n0(v.get("projected_recipe_train_seconds"))] for k, v in cost["rows"].items()]
        batch = next(iter(v["train_batch"] for v in cost["rows"].values() if "train_batch" in v), "?")
        out.append(table([f"cost on this machine ({cost['documents']} SciFact documents, max length 256)", "docs/s",
                          "slower than MiniLM", "SciFact encode (s, projected)", f"train step (s, {batch} queries)",
                          "100 x 32 steps (s, projected)"], "lrrrrr", crow))
        sources.append(source("sparse_decoder_cost", cost))
    for name in ("sparse_decoder_cost", "sparse_decoder_zero_shot"):  # the zero-shot slice, from whichever run has it
        rec = res.get(name)
        if rec is None or not (sl := rec.get("zero_shot_slice")):
            continue
        zrow = [[k, f4(metric(v["zero_shot_slice"], "ndcg@10")), f4(metric(v["zero_shot_slice"], "recall@100"))]
                for k, v in rec["rows"].items() if "zero_shot_slice" in v]
        out.append(table([f"untrained, zero-shot ({sl['queries']} SciFact test queries, {sl['documents']:,} documents)",
                          "nDCG@10", "R@100"], "lrr", zrow))
        out.append(f"The slice: the first {sl['queries']} test queries (sorted ids) against their judged documents "
                   f"plus seeded random others, {sl['documents']:,} documents in all, max length {sl['max_length']}, "
                   "exact dot products. It has far fewer distractors than the full corpus, so compare its rows "
                   "with each other only: it says where the decoder recipe starts.")
        if name != "sparse_decoder_cost":
            sources.append(source(name, rec))
        break
    bg = res.get("sparse_decoder_background")
    if bg is not None:
        before = {}  # the same slice without a background: this run's --baseline rows, else the zero-shot file's
        for name in ("sparse_decoder_zero_shot", "sparse_decoder_cost"):
            if (rec := res.get(name)) and rec.get("zero_shot_slice") == bg["zero_shot_slice"]:
                before = {k.removeprefix("smollm2 "): v["zero_shot_slice"] for k, v in rec["rows"].items()
                          if k.startswith("smollm2") and "zero_shot_slice" in v}
                break
        before.update({r["variant"]: r["zero_shot_slice"] for r in bg["rows"].values() if not r["background_docs"]})
        brows = []
        for label, r in bg["rows"].items():
            if not r["background_docs"]:
                continue
            base = before.get(r["variant"])
            brows.append([label, f4(r["zero_shot_slice"]["ndcg@10"]), f4(r["zero_shot_slice"]["recall@100"]),
                          f4(base["ndcg@10"]) if base else "–", f4(base["recall@100"]) if base else "–",
                          n0(r["build_seconds"])])
        sl = bg["zero_shot_slice"]
        out.append(table([f"untrained SmolLM2 SPLADE less a logit background (the same slice: {sl['queries']} "
                          f"queries, {sl['documents']:,} documents)", "nDCG@10", "R@100", "nDCG@10 without",
                          "R@100 without", "background s"], "lrrrrr", brows))
        out.append("`model.background_docs` / `model.background_sd`: each token's background level (mean plus "
                   "sd standard deviations of its max-pooled logit over a seeded sample of corpus documents, "
                   "max length 256) is subtracted from the logits before SPLADE pooling; top 256 terms per vector "
                   "as before. \"without\": the same variant, untrained, no background"
                   + (" (this run's `--baseline` rows)." if any(not r["background_docs"] for r in bg["rows"].values())
                      else " (`sparse_decoder_zero_shot.json`).")
                   + (f" {bg['note']}." if bg.get("note") else ""))
        sources.append(source("sparse_decoder_background", bg))
    if not sources:
        return "\n\n".join(out + [missing("`scifact_sparse_*.json`", "python benchmarks/sparse_recipe.py")])
    return "\n\n".join(out + sources)


def block_dense_ood(res: Results, name: str = "scifact_dense_wise_ft", trained: str = "the trained recipe") -> str:
    """A trained run out of domain and its WiSE-FT alphas (``wise_ft.py``): dev, out-of-domain and SciFact test."""
    rec = res.get(name)
    how = ("python benchmarks/wise_ft.py --run RUN --ood ../shared/datasets/cranfield,"
           "../shared/datasets/agentset-msmarco-5k")
    if rec is None:
        return missing(f"`{name}.json`", how)
    sets = list(rec["ood_collections"])
    labels = [Path(s).name for s in sets]
    base = rec["base"]["ood"]
    rule = rec["rule"]
    tests = rec.get("test") or {}
    header = ["model", "dev nDCG@10"] + [h for n in labels for h in (f"{n} nDCG@10", "Δ vs base")] + ["SciFact test"]
    rows = [["all-MiniLM-L6-v2 (base)", "–"] + [c for n in labels for c in (f4(base[n]), "–")] + ["–"]]
    for c in rec.get("candidates") or []:
        a = c["alpha"]
        label = f"WiSE-FT α = {a:g}" + (f" ({trained})" if a == 1 else "") + \
            (" **chosen**" if rec.get("chosen") == a else "")
        test = tests.get(f"{a:g}")
        rows.append([label, f4(c["dev"])] + [x for n in labels for x in (f4(c["ood"][n]), f"{c['ood'][n] - base[n]:+.4f}")]
                    + [f4(metric(test, "ndcg@10"))])
    lines = [table(header, "l" + "r" * (len(header) - 1), rows), ""]
    lines.append(f"Out of domain: full test corpora, max length {rec['ood_max_length']}, as `uniret eval --retriever dense "
                 f"--max-length {rec['ood_max_length']}`.")
    if rec.get("candidates") is None:
        lines.append("Only the base model is measured in this file: the trained run had not finished "
                     f"({where_when(rec)}).")
    else:
        lines.append(f"Trained model: the final checkpoint of `{rec['run_dir']}` ({rec['trained']['steps']} steps).")
        lines.append(f"Selection rule (dev + out-of-domain, never SciFact test): best dev {rule['dev_metric']} among the "
                     f"alphas whose {rule['ood_metric']} drop is ≤ {rule['max_ood_drop']} on every collection; "
                     f"chose α = {rec['chosen']:g} ({rule.get('reason', '')}).")
        chosen_test = metric(tests.get(f"{rec['chosen']:g}"), "ndcg@10")
        chosen = next(c for c in rec["candidates"] if c["alpha"] == rec["chosen"])
        worst = max(chosen["ood_drops"].values())
        test_note = "not measured" if chosen_test is None else (
            f"{'**met**' if chosen_test >= 0.7826 else '**not met**'} ({f4(chosen_test)}, "
            f"{chosen_test - 0.7826:+.4f})")
        lines.append(f"Targets: SciFact test ≥ 0.7826: {test_note}; no out-of-domain drop > 0.005: "
                     f"{'**met**' if worst <= 0.005 + 1e-12 else '**not met**'} (worst drop {worst:+.4f}).")
    lines.append(source(name, rec))
    return "\n".join(lines)


OOD_ABLATION_LABELS = {"recipe": "recipe before issue 13 (BM25 + MiniLM teachers, no WiSE-FT)", "lr5e-5": "learning rate 5e-5 (not 1e-4)",
                       "steps50": "50 steps (not 100)", "no-hard-negatives": "no hard negatives (in-batch only)",
                       "no-distill": "no distillation (InfoNCE only)",
                       "no-distill-h4": "no distillation, 4 hard negatives per query (candidate)",
                       "no-distill-len256": "no distillation, training length 256 (candidate)",
                       "minilm-teacher": "distillation to all-MiniLM-L6-v2 alone, no BM25 (candidate)",
                       "len256": "training length 256, distillation kept (candidate)",
                       "minilm-teacher-len256": "distillation to all-MiniLM-L6-v2 alone, training length 256 (candidate)",
                       "minilm-teacher-len256-freeze2": "the same, embeddings and layers 0-1 frozen (candidate)",
                       "minilm-teacher-len256-freeze-emb": "the same, embeddings frozen (candidate)"}


def block_dense_ood_ablation(res: Results) -> str:
    """Where the recipe's out-of-domain drop comes from (``dense_ood_ablation.py``): one factor per row."""
    name = "dense_ood_ablation"
    rec = res.get(name)
    if rec is None:
        return missing(f"`{name}.json`", "python benchmarks/dense_ood_ablation.py --records RUN/train_records.jsonl "
                                         "--recipe-run RUN")
    rows_in = rec["rows"]
    sets = sorted({s for r in rows_in.values() for s in (r.get("ood") or {})})
    header = ["row (one change from the recipe; candidates: changes on top of the ablation)", "dev nDCG@10", "SciFact test"] + [f"{s} Δ vs base" for s in sets] \
        + ["train s (own load)", "commit"]
    rows = []
    for key in [k for k in OOD_ABLATION_LABELS if k in rows_in] + [k for k in rows_in if k not in OOD_ABLATION_LABELS]:
        r = rows_in[key]
        ood = r.get("ood") or {}
        rows.append([OOD_ABLATION_LABELS.get(key, key), f4(metric(r.get("dev"), "ndcg@10")), f4(r["test"]["ndcg@10"])]
                    + [f"{ood[s]['difference']:+.4f}" if s in ood else "–" for s in sets]
                    + [n0(r.get("train_seconds")), f"`{(r.get('git') or {}).get('commit', '')[:7]}`"])
    base = next((r["ood"] for r in rows_in.values() if r.get("ood")), {})
    return "\n".join([
        table(header, "l" + "r" * (len(header) - 1), rows), "",
        "Every row trains on the same records (`--records`: the recipe run's mined negatives and teacher scores). "
        "Base model out of domain: " + ", ".join(f"{s} {f4(base[s]['before'])}" for s in sets) + "; Δ is the row's "
        "model minus the base, full test corpora at max length 256. Each row's command, start, load average and commit "
        "are in its entry of the results file; training seconds are not comparable across rows (the recipe row is an "
        "earlier run on a loaded machine, the others ran on one thread beside another job).",
        source(name, rec)])


def block_dense_soup(res: Results, name: str = "dense_soup") -> str:
    """Member runs and their model soups on dev, out of domain and SciFact test (``dense_soup.py``)."""
    rec = res.get(name)
    if rec is None:
        return missing(f"`{name}.json`", "python benchmarks/dense_soup.py --member A=RUN_A --member B=RUN_B --soup A+B")
    rule = rec["rule"]
    devs = list(rec["dev_sets"])
    sets = list(rec["base"]["ood"])
    base = rec["base"]["ood"]
    header = ["candidate (runs on the same records; soups: uniform weight average)"] + \
        [f"{d} nDCG@10 ({n0(rec['dev_sets'][d])} docs)" for d in devs] + [f"{s} Δ vs base" for s in sets] + \
        ["SciFact test"]
    rows = []
    for c in rec["candidates"]:
        label = f"`{c['name']}`" + (" **chosen**" if rec.get("chosen") == c["name"] else "")
        rows.append([label] + [f4(c["dev"].get(d)) for d in devs]
                    + [f"{c['ood'][s] - base[s]:+.4f}" for s in sets] + [f4(metric(c.get("test"), "ndcg@10"))])
    lines = [table(header, "l" + "r" * (len(header) - 1), rows), ""]
    lines.append("Members: " + ", ".join(f"`{n}` = `{p}`" for n, p in rec["members"].items()) + "; `base` is "
                 "all-MiniLM-L6-v2 (out of domain: " + ", ".join(f"{s} {f4(base[s])}" for s in sets) + "). Dev: the "
                 f"recipe's 100 held-out training queries at max length {rec['eval_max_length']}, the length of test "
                 "and out of domain (full test corpora).")
    if rec.get("chosen") is not None:
        chosen = next(c for c in rec["candidates"] if c["name"] == rec["chosen"])
        worst = max(chosen["ood_drops"].values())
        test = metric(chosen.get("test"), "ndcg@10")
        lines.append(f"Selection rule (never SciFact test): best {rule['dev']} {rule['dev_metric']} among the "
                     f"candidates whose {rule['ood_metric']} drop is ≤ {rule['max_ood_drop']} on every collection; "
                     f"chose `{rec['chosen']}` ({rule.get('reason', '')}).")
        test_note = "not measured" if test is None else (
            f"{'**met**' if test >= 0.7826 else '**not met**'} ({f4(test)}, {test - 0.7826:+.4f})")
        lines.append(f"Targets for the chosen candidate: SciFact test ≥ 0.7826: {test_note}; no out-of-domain drop > "
                     f"0.005: {'**met**' if worst <= 0.005 + 1e-12 else '**not met**'} (worst drop {worst:+.4f}).")
    lines.append(source(name, rec))
    return "\n".join(lines)


def block_readme_ood(res: Results) -> str:
    """README's sentence on the shipped recipe out of domain (README.md may carry this block), from its own run
    (``dense_recipe.py``: the pipeline's WiSE-FT sweep and out-of-domain guard)."""
    rec = res.get("scifact_dense_recipe")
    if rec is None or not rec.get("interpolation") or not rec.get("ood"):
        return missing("`scifact_dense_recipe.json` with the recipe's `interpolation` and `ood`",
                       "python benchmarks/dense_recipe.py --rows recipe")
    sweep, ood = rec["interpolation"], rec["ood"]
    first = next((c for c in sweep["candidates"] if c["alpha"] == 1.0), None)
    parts = []
    if first is not None:
        parts.append("out of domain the recipe's trained weights (α = 1) move nDCG@10 " + ", ".join(
            f"{f4(ood[n]['before'])} → {f4(first['ood'][n])} on {n}" for n in ood))
    parts.append(f"WiSE-FT with the base model (α = {sweep['chosen']:g}, chosen by the config's rule on dev + "
                 "out-of-domain) gives " + ", ".join(f"{f4(r['after'])} ({r['difference']:+.4f}) on {n}"
                                                      for n, r in ood.items())
                 + f", and {f4(rec['test']['ndcg@10'])} on SciFact test")
    return "; ".join(parts) + ". Source: `benchmarks/results/scifact_dense_recipe.json`."


def block_limit(res: Results) -> str:
    """LIMIT-small through every family (issue 11)."""
    rec = res.get("limit_small")
    if rec is None:
        return missing("`limit_small.json`", "python benchmarks/limit.py")
    rows = [[name, f4(r["recall@2"]), f4(r["recall@10"]), f4(r["recall@100"]), f4(r["ndcg@10"])]
            for name, r in rec["rows"].items()]
    return "\n\n".join([table([f"LIMIT-small ({n0(rec['queries'])} queries, {rec['documents']} documents)", "R@2",
                                 "R@10", "R@100", "nDCG@10"], "lrrrr", rows),
                           "With 46 documents R@100 is 1 for every system; R@2 is the telling column.",
                           source("limit_small", rec)])


def block_scale(res: Results) -> str:
    """10k / 100k / 1M synthetic documents through the dense and sparse paths (issue 11)."""
    rec = res.get("scale")
    if rec is None:
        return missing("`scale.json`", "cd benchmarks && python scale.py")
    rows = [[r["path"], n0(r["docs"]), r.get("engine") or "–", n1(r["build_seconds"]), n1(r["save_seconds"]),
             n0(r["peak_rss_mb"]), n0(r["index_mb"]), n0(r["qps"]), f4(r["recall@10"]),
             f2(r.get("real_model_encode_hours_extrapolated"))] for r in rec["rows"]]
    growth = "; ".join(f"{path} {g['from']:,}→{g['to']:,}: build ×{g['build_time_x']}, peak RSS ×{g['peak_rss_x']}, "
                       f"QPS ×{g['qps_x']}" for path, gs in (rec.get("growth") or {}).items() for g in gs)
    real = rec.get("real_model_slice")
    notes = [f"Encoders: {rec['encoders']['dense']} and {rec['encoders']['sparse']}, cheap stand-ins that run the "
             "same pipeline (streamed shards of "
             f"{n0(rec['shard_size'])} documents into FAISS flat; the sparse index on its default engine). Peak RSS: "
             f"the worker process's VmHWM (target ≤ {n0(rec['target']['peak_rss_mb_at_1M'])} MiB at 1M). "
             "QPS: 200 queries, one batch, k = 10."]
    if real:
        notes.append(f"Real-model slice: {real['model']} ({real['backend']}, max length {real['max_length']}) encoded "
                     f"{real['docs']} of these documents at {real['docs_per_second']} docs/s; the last column "
                     "*extrapolates* the hours it would add to encode each corpus on this machine.")
    if growth:
        notes.append("Growth: " + growth + ".")
    if not rec.get("complete", True):
        notes.append("*Partial: the run had not finished all sizes when this file was written.*")
    notes.append(f"Load average at start {', '.join(f'{x:.1f}' for x in (rec['machine'].get('load_average_at_start') or []))}"
                 f", at end {load_label(rec)}: a shared machine, so times are upper bounds.")
    parts = [table(["path", "docs", "index", "build s", "save s", "peak RSS MiB", "index MiB", "QPS", "R@10",
                    "real-model encode h (extrapolated)"], "lrlrrrrrrr", rows), *notes, source("scale", rec)]
    fixes = {"scale_sparse_1m": "Sparse at 1M again, after the build's memory fixes (commit {commit}: streamed encoding, "
                                "float vectors released before the engine builds, the PISA collection written "
                                "through a CSC transpose):",
             "scale_dense_1m": "Dense at 1M again, after the flat index is sized once and filled in place from the "
                               "shards (commit {commit}; adding shard after shard grew faiss's storage by doubling):"}
    for again_name, intro in fixes.items():
        again = res.get(again_name)
        if again is None:
            continue
        commit = ((again.get("git") or {}).get("commit") or "")[:7]
        parts += [intro.format(commit=commit),
                  table(["path", "docs", "index", "build s", "save s", "peak RSS MiB", "index MiB", "QPS", "R@10"],
                        "lrlrrrrrr", [[r["path"], n0(r["docs"]), r.get("engine") or "–", n1(r["build_seconds"]),
                                       n1(r["save_seconds"]), n0(r["peak_rss_mb"]), n0(r["index_mb"]), n0(r["qps"]),
                                       f4(r["recall@10"])] for r in again["rows"]]),
                  source(again_name, again)]
    runs = [(n, res.get(n)) for n in ("scale_sparse_threads1", "scale_sparse_threads")]
    if all(r is not None for _, r in runs):
        commit = ((runs[1][1].get("git") or {}).get("commit") or "")[:7]
        parts += [f"The sparse index's batch search on one thread and on the usable cores (commit {commit}; PISA's "
                  "term-at-a-time cannot use threads, MaxScore can, and `auto` picks by corpus size and threads; "
                  "the same machine, one run after the other):",
                  table(["docs", "search threads", "PISA algorithm", "build s", "peak RSS MiB", "QPS", "R@10"],
                        "rrlrrrr", [[n0(r["docs"]), str(r["search_threads"]), f"`{r['pisa_algorithm']}`",
                                     n1(r["build_seconds"]), n0(r["peak_rss_mb"]), n0(r["qps"]), f4(r["recall@10"])]
                                    for _, rec in runs for r in rec["rows"]]),
                  *(source(n, r) for n, r in runs)]
    return "\n\n".join(parts)

def block_cheap_eval(res: Results) -> str:
    """Cheap evaluation: rank agreement of systems on downsampled corpora (issue 11)."""
    rec = res.get("cheap_eval")
    if rec is None:
        return missing("`cheap_eval.json`", "python benchmarks/cheap_eval.py")
    variants = [v for v in ("pooled", "leave-one-out", "family-out", "random")
                if all(v in k["agreement"] for k in rec["by_k"].values())]

    def corr(a: dict[str, Any]) -> str:
        return f"{f2(a['spearman'])} / {f2(a['kendall'])}" + ("" if a["same_best"] else " ✗")

    def inflation(r: dict[str, Any]) -> str:
        return " / ".join(f"{sum(x[v] - x['full'] for x in r['systems'].values()) / len(r['systems']):+.3f}"
                          for v in variants)

    rows = [[str(k), n0(r["documents"]), f"{r['reduction']:.1f}x", *[corr(r["agreement"][v]) for v in variants],
             inflation(r)] for k, r in rec["by_k"].items()]
    n = len(rec["full"])
    head = table([f"{rec['data']} {rec['split']}: pool top-k per query", "documents kept", "fewer",
                  *[f"{v}: Spearman / Kendall" for v in variants], "mean nDCG@10 − full (same order)"],
                 "lrr" + "r" * len(variants) + "r", rows)
    k = str(rec.get("headline_k") or list(rec["by_k"])[len(rec["by_k"]) // 2])
    at = rec["by_k"][k]
    sys_rows = [[name, f4(r["full"]), *[f4(r[v]) for v in variants], r.get("family-out_pool", "–")]
                for name, r in sorted(at["systems"].items(), key=lambda x: -x[1]["full"])]
    detail = table([f"nDCG@10 at k = {k}", "full corpus", *variants, "family-out pool"],
                   "lr" + "r" * len(variants) + "l", sys_rows)
    return "\n\n".join([
        head,
        f"Over {n} systems; full corpus {n0(rec['full_documents'])} documents, {n0(rec['judged_documents'])} of them "
        f"judged, {n0(rec['queries'])} queries. Pooling systems: {', '.join(rec['pooling_systems'])}. "
        "✗: the best system on the cheap corpus is not the best on the full one. "
        "`random`: the judged documents plus random others, as many documents as `pooled` keeps.",
        detail, source("cheap_eval", rec)])


BLOCKS: dict[str, Callable[[Results], str]] = {
    "provenance": block_provenance,
    "zero-shot": block_zero_shot,
    "demo-wall": block_demo_wall,
    "demo-systems": block_demo_systems,
    "encode-throughput": block_encode_throughput,
    "encode-backends": block_encode_backends,
    "bm25-qps": block_bm25_qps,
    "dense-recipe": block_dense_recipe,
    "dense-recipe-details": block_dense_recipe_details,
    "dense-ood": block_dense_ood,
    "dense-ood-len256": lambda res: block_dense_ood(res, "scifact_dense_wise_ft_len256",
                                                    "no distillation, training length 256"),
    "dense-ood-ablation": block_dense_ood_ablation,
    "dense-soup": block_dense_soup,
    "dense-soup-len256": lambda res: block_dense_soup(res, "dense_soup_len256"),
    "dense-ood-minilm-teacher": lambda res: block_dense_ood(res, "scifact_dense_wise_ft_minilm_teacher",
                                                            "distillation to all-MiniLM-L6-v2 alone"),
    "dense-ood-minilm-teacher-len256": lambda res: block_dense_ood(
        res, "scifact_dense_wise_ft_minilm_teacher_len256", "distillation to all-MiniLM-L6-v2 alone, length 256"),
    "ablation-40": block_ablation_40,
    "train-throughput": block_train_throughput,
    "decoder-embedder": block_decoder_embedder,
    "reranker": block_reranker,
    "sparse-engines": block_sparse_engines,
    "pisa-algorithms": block_pisa_algorithms,
    "sparse-recipe": block_sparse_recipe,
    "sparse-ood": block_sparse_ood,
    "sparse-pruning": block_sparse_pruning,
    "sparse-ood-wise-ft": lambda res: block_sparse_ood(res, "sparse_ood_wise_ft"),
    "sparse-ood-sides": block_sparse_ood_sides,
    "sparse-ood-frozen-query": lambda res: block_sparse_guarded(
        res, "scifact_sparse_splade_frozen_query", "query encoder frozen"),
    "sparse-ood-splade-teacher": lambda res: block_sparse_guarded(
        res, "scifact_sparse_splade_splade_teacher", "teachers SPLADE-tiny + MiniLM"),
    "limit": block_limit,
    "scale": block_scale,
    "cheap-eval": block_cheap_eval,
    "hybrid": block_hybrid,
    "serve-latency": block_serve_latency,
    "generative-structures": block_generative_structures,
    "generative-trained": block_generative_trained,
    "generative-fusion-sweep": block_generative_fusion_sweep,
    "generative-keys": block_generative_keys,
    "generative-grid": block_generative_grid,
    "generative-grid-1200": lambda res: block_generative_grid(
        res, "generative_keys_grid_dev_1200steps", GRID_TEST_FILES_1200, None),
    "generative-prompts": block_generative_prompts,
    "generative-targets": block_generative_targets,
    "readme-demo": block_readme_demo,
    "readme-recipe": block_readme_recipe,
    "readme-ood": block_readme_ood,
}
DOCS = (DOC, HERE.parent / "README.md")  # README.md's numbers may be generated blocks too


def render(text: str, results: Results | str | Path = RESULTS) -> str:
    """``text`` with every marked block regenerated from ``results``; unknown block names are an error."""
    res = results if isinstance(results, Results) else Results(results)

    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise KeyError(f"BENCHMARKS.md has a block {name!r} that render.py does not know; known: {', '.join(BLOCKS)}")
        return f"{m.group(1)}{BLOCKS[name](res).rstrip()}\n{m.group(4)}"

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 with a diff if a file differs")
    ap.add_argument("--doc", action="append", default=None,
                    help="document to render (repeatable; default BENCHMARKS.md and README.md, whose blocks are "
                         "rendered only where it has markers)")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    res = Results(args.results)
    stale = []
    for doc in [Path(d) for d in args.doc] if args.doc else [d for d in DOCS if d.is_file()]:
        old = doc.read_text(encoding="utf-8")
        new = render(old, res)
        if old == new:
            continue
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       f"{doc} (as committed)", f"{doc} (as rendered)"))
            stale.append(str(doc))
        else:
            doc.write_text(new, encoding="utf-8")
            print(f"rewrote {doc}")
    if stale:
        print(f"\n{', '.join(stale)} differ(s) from what the results files render: run python benchmarks/render.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

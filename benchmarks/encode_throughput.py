"""Dense encoding throughput (docs/s) on SciFact: uniret's DenseEncoder against
``SentenceTransformer.encode`` on the same model, batch size and max length, in one run.

The encoders alternate over ``--rounds`` rounds on the same documents (each round rotates the order), so
drift in machine speed hits all of them; ratios are total time of sentence-transformers (torch) / total
time of each. No embedding cache is used.

Without ``--backends``: uniret's torch backend against ``SentenceTransformer.encode`` on the very same model
object (results ``encode_throughput.json``). With ``--backends torch onnx onnx-int8``: each uniret inference
backend against ``SentenceTransformer.encode`` (results ``encode_backends.json``, with each backend's fidelity
to the torch embeddings, tokens per document and the fp32 compute floor of this machine).

    python benchmarks/encode_throughput.py --limit 1500 --rounds 2
    python benchmarks/encode_throughput.py --limit 300 --rounds 2 --backends torch bf16 onnx onnx-int8 --fastembed

``--st-onnx-python PY`` adds sentence-transformers' own ONNX backends (``backend="onnx"`` unoptimised, O1-O3 and
dynamic int8), exported and run by ``st_onnx_peer.py`` in the venv of PY, which must have sentence-transformers 5,
transformers 4.57 and optimum-onnx (see that script). The worker waits idle between requests, so its variants
take their turn in the same rotating rounds as the encoders of this process; a round's time for them includes
passing the embeddings back through a ``.npy`` file (milliseconds).

``--fastembed`` needs fastembed importable (``pip install --no-deps fastembed loguru mmh3 py-rust-stemmers``;
it is no dependency of uniret).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import save_result
from uniret.data import load_beir
from uniret.retriever.dense import DenseEncoder
from uniret.runtime import ONNX_BACKENDS

ISSUE_FP32_FLOOR_DOCS_PER_S = 37.0
"""Issue #12's fp32 compute floor for MiniLM-L6 on SciFact at max length 256: 21 MFLOP per token x 1.25 M tokens
on 2 AVX2 cores at about 190 GFLOP/s. (The benchmark machine reports AVX-512, VNNI and AMX: its true floor is lower.)"""


def model_flops_per_token(config: Any, tokens: float) -> float:
    """Forward FLOPs per token of a BERT-style encoder at an average sequence length of ``tokens``: the
    projections and feed-forward (2 x (4 h^2 + 2 h i) per layer) plus attention scores and mixing (4 L h)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * (2 * (4 * h * h + 2 * h * i) + 4 * tokens * h)


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 3.0) -> float:
    """Measured FLOP/s of ``(m, k) @ (k, n)`` in ``dtype`` with torch's intra-op threads (oneDNN / MKL)."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - start)


FLOOR_DTYPES = ("float32", "bfloat16")


def gemm_shape(config: Any, tokens_per_document: float, batch_size: int) -> tuple[int, int, int]:
    """The model's largest matrix product for one batch: (batch tokens, hidden, intermediate)."""
    return int(batch_size * tokens_per_document), config.hidden_size, config.intermediate_size


def gemm_sample(shape: tuple[int, int, int]) -> dict[str, float]:
    """One measurement of the GEMM rate (FLOP/s) of ``shape`` in each of :data:`FLOOR_DTYPES`."""
    return {dt: gemm_rate(*shape, getattr(torch, dt)) for dt in FLOOR_DTYPES}


def machine_floor(config: Any, tokens_per_document: float, batch_size: int,
                  samples: list[dict[str, float]]) -> dict[str, Any]:
    """This machine's compute floor for the model: docs/s if every FLOP ran at the best measured rate (over
    ``samples``, one per round: the rate varies with the load on a shared machine) of the model's largest matrix
    product, in fp32 and in bf16. Attention, norms and activations make real encoders slower than this."""
    flops = model_flops_per_token(config, tokens_per_document)
    rates = {dt: max(s[dt] for s in samples) for dt in FLOOR_DTYPES}
    return {"model_flops_per_token": flops, "gemm_shape": list(gemm_shape(config, tokens_per_document, batch_size)),
            "gemm_gflops": {dt: r / 1e9 for dt, r in rates.items()},
            "gemm_gflops_samples": [{dt: s[dt] / 1e9 for dt in FLOOR_DTYPES} for s in samples],
            "floor_docs_per_s": {dt: r / (flops * tokens_per_document) for dt, r in rates.items()}}


def fastembed_model(encoder: DenseEncoder, folder: Path, max_length: int, threads: int | None) -> Any:
    """fastembed's ``TextEmbedding`` on ``encoder``'s ONNX graph (pooled, normalised output) and tokenizer files."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    shutil.copy(encoder.session.path, folder / "model.onnx")
    for name in ("config.json", "special_tokens_map.json", "tokenizer.json", "vocab.txt"):
        if (Path(encoder.path) / name).is_file():
            shutil.copy(Path(encoder.path) / name, folder / name)
    tok = json.loads((Path(encoder.path) / "tokenizer_config.json").read_text())
    tok["model_max_length"] = max_length  # fastembed truncates at the tokenizer's maximum
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    name = f"uniret/{folder.name}"
    TextEmbedding.add_custom_model(name, pooling=PoolingType.DISABLED, normalization=False,
                                   sources=ModelSource(hf=name), dim=encoder.dimension, model_file="model.onnx")
    return TextEmbedding(name, specific_model_path=str(folder), threads=threads)


class StOnnxPeer:
    """``st_onnx_peer.py`` running in another venv: one variant's ``encode`` of the fixed texts per request."""

    def __init__(self, python: str, model_path: str, texts: list[str], batch_size: int, max_length: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="st-onnx-peer-"))
        (self.dir / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).with_name("st_onnx_peer.py")), "--model", model_path,
             "--texts", str(self.dir / "texts.json"), "--workdir", str(self.dir), "--batch-size", str(batch_size),
             "--max-length", str(max_length)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self.info = self._read()
        self.seconds: dict[str, float] = {}

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"st_onnx_peer.py exited with code {self.proc.wait()} (its stderr is above)")
        return json.loads(line)

    def encode(self, name: str) -> np.ndarray:
        assert self.proc.stdin is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        self.seconds[name] = self.seconds.get(name, 0.0) + answer["seconds"]
        return np.load(self.dir / f"{name}.npy")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def timed_rounds(encoders: dict, texts: list[str], rounds: int, after_round: Any = None
                 ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Each encoder once per round, in rotating order; ``after_round()`` (untimed) after each round."""
    times = dict.fromkeys(encoders, 0.0)
    outputs = {}
    names = list(encoders)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            outputs[name] = encoders[name](texts)
            times[name] += time.perf_counter() - start
            print(f"round {r + 1} {name}: {times[name]:.1f} s cumulative", flush=True)
        if after_round is not None:
            after_round()
    return times, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--limit", type=int, default=1500, help="documents (0 = the whole corpus)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", nargs="*", default=None, help="uniret inference backends to compare")
    ap.add_argument("--fastembed", action="store_true",
                    help="also time fastembed's TextEmbedding on the very ONNX graphs of uniret's onnx backends "
                         "(fastembed cannot load this model offline otherwise: it downloads its own export)")
    ap.add_argument("--st-onnx-python", default=None, metavar="PY",
                    help="python of a venv with sentence-transformers 5, transformers 4.57 and optimum-onnx: adds "
                         "sentence-transformers' own ONNX backends (st_onnx_peer.py)")
    ap.add_argument("--results-dir", default=None, help="where the results JSON goes (default benchmarks/results)")
    args = ap.parse_args()

    corpus = load_beir(args.data).corpus
    docs = list(itertools.islice(corpus, args.limit or None))
    texts = [d.full_text() for d in docs]
    enc = DenseEncoder(args.model, device="cpu", max_length=args.max_length, batch_size=args.batch_size)
    st = enc.model  # the very same SentenceTransformer object
    n = len(texts) * args.rounds
    if args.backends is None:
        encoders = {"sentence_transformers": lambda t: st.encode(t, batch_size=args.batch_size, convert_to_numpy=True),
                    "uniret": lambda t: enc.encode_documents(t, show_progress=False)}
        for fn in encoders.values():
            fn(texts[:64])  # warm-up
        times, out = timed_rounds(encoders, texts, args.rounds)
        result = {
            "data": args.data, "model": args.model, "documents": len(texts), "rounds": args.rounds,
            "batch_size": args.batch_size, "max_length": args.max_length, "torch_threads": torch.get_num_threads(),
            "docs_per_s": {k: n / v for k, v in times.items()},
            "ratio_uniret_over_st": times["sentence_transformers"] / times["uniret"],
            "max_abs_diff": float(np.abs(out["uniret"] - out["sentence_transformers"]).max()),
        }
        path = save_result("encode_throughput", result, results_dir=args.results_dir)
        print(f"uniret {result['docs_per_s']['uniret']:.1f} docs/s, sentence-transformers "
              f"{result['docs_per_s']['sentence_transformers']:.1f} docs/s, ratio {result['ratio_uniret_over_st']:.3f} "
              f"(max |diff| {result['max_abs_diff']:.1e}); written to {path}")
        return

    encoders = {"sentence_transformers": lambda t: st.encode(t, batch_size=args.batch_size, convert_to_numpy=True)}
    threads = None
    for backend in args.backends:
        e = enc if backend == "torch" else DenseEncoder(args.model, device="cpu", max_length=args.max_length,
                                                        batch_size=args.batch_size, backend=backend)
        threads = getattr(e.session, "threads", None) if backend in ONNX_BACKENDS else threads  # export untimed
        encoders[f"uniret_{backend}"] = lambda t, e=e: e.encode_documents(t, show_progress=False)
        if args.fastembed and backend in ONNX_BACKENDS:
            fe = fastembed_model(e, Path(tempfile.mkdtemp(prefix="fastembed-")), args.max_length, threads)
            encoders[f"fastembed_{backend}"] = lambda t, fe=fe: np.asarray(list(fe.embed(t, batch_size=args.batch_size)))
    for fn in encoders.values():
        fn(texts[:64])  # warm-up
    peer = None
    if args.st_onnx_python:  # exported and warmed up in the worker, before any timing
        from uniret.assets import resolve_model

        peer = StOnnxPeer(args.st_onnx_python, str(resolve_model(args.model)), texts, args.batch_size,
                          args.max_length)
        for variant in peer.info["variants"]:
            encoders[f"st_{variant}"] = lambda t, v=variant: peer.encode(v)
    tokens = sum(len(x) for x in enc._tokenize(texts))
    shape = gemm_shape(enc._backbone_config(), tokens / len(texts), args.batch_size)
    samples: list[dict[str, float]] = []
    try:
        times, out = timed_rounds(encoders, texts, args.rounds, lambda: samples.append(gemm_sample(shape)))
    finally:
        if peer is not None:
            peer.close()
    ref = out["sentence_transformers"]
    fidelity = {}
    for name, emb in out.items():
        cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
        fidelity[name] = {"min_cosine": float(cos.min()), "max_abs_diff": float(np.abs(emb - ref).max())}
    result = {
        "data": args.data, "model": args.model, "documents": len(texts), "rounds": args.rounds,
        "batch_size": args.batch_size, "max_length": args.max_length, "torch_threads": torch.get_num_threads(),
        "onnx_threads": threads, "tokens_per_document": tokens / len(texts),
        "issue_fp32_floor_docs_per_s": ISSUE_FP32_FLOOR_DOCS_PER_S,
        "machine_floor": machine_floor(enc._backbone_config(), tokens / len(texts), args.batch_size, samples),
        "docs_per_s": {k: n / v for k, v in times.items()},
        "ratio_over_st_torch": {k: times["sentence_transformers"] / v for k, v in times.items()},
        "fidelity_to_st_torch": fidelity,
    }
    if peer is not None:
        result["st_onnx_peer"] = {**{k: v for k, v in peer.info.items() if k != "ready"},
                                  "encode_seconds_in_worker": peer.seconds, "python": args.st_onnx_python}
    path = save_result("encode_backends", result, results_dir=args.results_dir)
    for k, v in result["docs_per_s"].items():
        print(f"{k}: {v:.1f} docs/s, x{result['ratio_over_st_torch'][k]:.2f} over sentence-transformers, "
              f"min cosine {fidelity[k]['min_cosine']:.6f}")
    floor = result["machine_floor"]["floor_docs_per_s"]
    print(f"issue #12's fp32 floor: {ISSUE_FP32_FLOOR_DOCS_PER_S} docs/s; this machine's measured floor: fp32 "
          f"{floor['float32']:.1f}, bf16 {floor['bfloat16']:.1f} docs/s; written to {path}")


if __name__ == "__main__":
    main()

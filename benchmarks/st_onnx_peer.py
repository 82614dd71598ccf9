"""sentence-transformers' own ONNX backends, as a worker process for ``encode_throughput.py --st-onnx-python``.

sentence-transformers exports ONNX through optimum (``optimum-onnx``), which needs transformers < 4.58 and so
cannot live in uniret's environment (transformers 5). This script runs in a separate venv that has them::

    python3 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install torch==2.13.0
    /work/peer-venv/bin/pip install "sentence-transformers>=5,<6" "transformers==4.57.*" optimum-onnx onnxruntime

It imports nothing of uniret. It copies the model folder, exports it once with sentence-transformers' own tools
(``backend="onnx"``; ``export_optimized_onnx_model`` at O1-O3, O4 being GPU fp16 only; and
``export_dynamic_quantized_onnx_model``), all before any timing, then waits on stdin. Each request line names a
variant: it encodes the texts file with that variant's ``SentenceTransformer.encode``, saves the embeddings to
``WORKDIR/NAME.npy`` and answers one JSON line with the seconds spent in ``encode``. While it waits it uses no
CPU, so the parent can interleave it with its own encoders, round by round, on the same documents.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="a sentence-transformers model folder (copied, not changed)")
    ap.add_argument("--texts", required=True, help="a JSON list of the documents to encode")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--optimization-levels", default="O1,O2,O3")
    ap.add_argument("--quantization", default="avx512_vnni", help="export_dynamic_quantized_onnx_model config")
    args = ap.parse_args()

    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    work = Path(args.workdir)
    folder = work / "model"
    shutil.copytree(args.model, folder, dirs_exist_ok=True)
    texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))

    def load(file_name: str | None = None) -> SentenceTransformer:
        kwargs = {"model_kwargs": {"file_name": file_name}} if file_name else {}
        model = SentenceTransformer(str(folder), device="cpu", backend="onnx", local_files_only=True, **kwargs)
        model.max_seq_length = args.max_length
        return model

    export: dict[str, float] = {}
    start = time.perf_counter()
    base = load()  # exports model.onnx through optimum (no ONNX file in the folder yet)
    base.save(str(folder))
    export["onnx"] = time.perf_counter() - start
    models = {"onnx": base}
    for level in [x for x in args.optimization_levels.split(",") if x]:
        start = time.perf_counter()
        export_optimized_onnx_model(base, level, str(folder))
        models[f"onnx_{level}"] = load(f"onnx/model_{level}.onnx")
        export[f"onnx_{level}"] = time.perf_counter() - start
    if args.quantization:
        start = time.perf_counter()
        export_dynamic_quantized_onnx_model(base, args.quantization, str(folder))
        models[f"onnx_qint8_{args.quantization}"] = load(f"onnx/model_qint8_{args.quantization}.onnx")
        export[f"onnx_qint8_{args.quantization}"] = time.perf_counter() - start
    for model in models.values():
        model.encode(texts[:64], batch_size=args.batch_size)  # warm-up

    import onnxruntime

    reply({"ready": True, "variants": list(models), "export_seconds": export,
           "versions": {p: version(p) for p in ("sentence-transformers", "transformers", "optimum-onnx", "optimum",
                                                "onnxruntime", "torch")},
           "onnxruntime_providers": onnxruntime.get_available_providers()})
    for line in sys.stdin:
        name = line.strip()
        if name == "quit":
            break
        start = time.perf_counter()
        emb = models[name].encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
        seconds = time.perf_counter() - start
        np.save(work / f"{name}.npy", emb)
        reply({"name": name, "seconds": seconds})


if __name__ == "__main__":
    main()

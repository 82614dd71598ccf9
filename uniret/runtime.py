"""Small run-time helpers shared by every wing: device choice and library versions for reports."""

from __future__ import annotations

import importlib.metadata
import platform

LIBRARIES = ("uniret", "torch", "transformers", "sentence-transformers", "faiss-cpu", "faiss-gpu", "pyserini",
             "pytrec-eval-terrier", "numpy", "datasets")


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` (or None) picks ``cuda`` when a GPU is visible, else ``cpu``; anything else is kept."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


INFERENCE_BACKENDS = ("torch", "onnx", "onnx-int8")
"""The inference backends every encoder accepts (see :mod:`uniret.retriever.onnx`)."""

DEMO_BACKEND = "onnx-int8"
"""The demo's encoder backend: the fastest one that meets the fidelity bar (BENCHMARKS.md, encode throughput)."""


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`INFERENCE_BACKENDS`, else a ``ValueError`` naming the choices."""
    if backend not in INFERENCE_BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of {', '.join(INFERENCE_BACKENDS)}")
    return backend


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_description() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}"

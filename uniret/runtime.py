"""Small run-time helpers shared by every wing: device choice and library versions for reports."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import platform
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

LIBRARIES = ("uniret", "torch", "transformers", "sentence-transformers", "faiss-cpu", "faiss-gpu", "pyserini",
             "pytrec-eval-terrier", "numpy", "datasets")


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` (or None) picks ``cuda`` when a GPU is visible, else ``cpu``; anything else is kept."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


INFERENCE_BACKENDS = ("torch", "bf16", "onnx", "onnx-int8")
"""The inference backends every encoder accepts: ``torch`` (the module in fp32), ``bf16`` (the same module under
bfloat16 autocast: matrix products in bf16 on AMX / AVX512-BF16 cores or a GPU, normalisations and softmax in fp32)
and the ONNX Runtime ones (see :mod:`uniret.retriever.onnx`)."""

ONNX_BACKENDS = ("onnx", "onnx-int8")
"""The backends that run an exported ONNX graph instead of the torch module."""



def demo_backend() -> str:
    """The demo's encoder backend: the fastest one on this machine that meets the fidelity bar (BENCHMARKS.md,
    encode throughput): ``bf16`` where bfloat16 is native (a GPU, or a CPU with AVX512-BF16 / AMX), else
    ``onnx-int8``."""
    import torch

    return "bf16" if torch.cuda.is_available() or native_bf16() else "onnx-int8"


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`INFERENCE_BACKENDS`, else a ``ValueError`` naming the choices."""
    if backend not in INFERENCE_BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of {', '.join(INFERENCE_BACKENDS)}")
    return backend


@functools.cache
def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 in ``/proc/cpuinfo``); False where
    that cannot be read. Elsewhere torch emulates bf16, which is slower than fp32."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@contextlib.contextmanager
def inference_autocast(backend: str, device: str) -> Iterator[None]:
    """The context a torch forward of ``backend`` runs in: bfloat16 autocast for ``bf16``, nothing otherwise."""
    if backend != "bf16":
        yield
        return
    import torch

    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if kind == "cpu" and not native_bf16():
        _warn_emulated_bf16()
    with torch.autocast(kind, dtype=torch.bfloat16):
        yield


@functools.cache
def _warn_emulated_bf16() -> None:
    logger.warning("backend bf16: this CPU has no AVX512-BF16 / AMX-BF16, so bfloat16 is emulated and slower than "
                   "fp32; use torch or onnx-int8 here")


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

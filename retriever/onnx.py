"""ONNX Runtime inference backends: export a torch module once, cache it, run it in an optimised session.

Three inference backends share every encoder's batching (exact-length, length-sorted, minimally padded
batches): ``torch`` (the module itself), ``onnx`` (the module exported with ``torch.onnx`` and run by ONNX
Runtime with all graph optimisations) and ``onnx-int8`` (the same export with its MatMul weights
quantised to int8, activations quantised dynamically per batch).

The pieces are generic, so any Hugging Face module can use them (an MLM head for SPLADE as well as an
embedder):

- :func:`export_module` exports ``fn(features) -> tensor`` for a dict of named int64 inputs, with the batch
  and sequence axes of every input dynamic. The example batch must be padded (rows of different lengths):
  an export traced from a batch without padding can drop the attention-mask path (transformers skips an
  all-ones mask), and padded batches then come out wrong (0.96 cosine instead of 1.0).
- :func:`quantize_int8` is ONNX Runtime's dynamic quantisation of the MatMul weights (per channel), with the
  first layer's feed-forward output projection kept float (:data:`INT8_KEEP_FLOAT`).
- :func:`cached_model` keeps an export in ``$UNIRET_CACHE/onnx/<key>/`` (see :func:`uniret.assets.cache_dir`),
  keyed by the model's content hash and the export settings, written atomically: the second run loads it.
- :class:`OnnxSession` runs it with ``intra_op_num_threads`` threads.

Threads: ``threads=None`` uses ``$UNIRET_ONNX_THREADS`` when set, else torch's intra-op thread count
(``torch.get_num_threads()``, i.e. the physical cores, or ``$OMP_NUM_THREADS``). On a machine with several
sockets run one process per socket, pinned, with that socket's core count, for example
``UNIRET_ONNX_THREADS=32 numactl --cpunodebind=0 --membind=0 uniret index ... --backend onnx``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uniret.assets import cache_dir
from uniret.atomic import atomic_directory, write_text_atomic
from uniret.runtime import INFERENCE_BACKENDS as BACKENDS
from uniret.runtime import check_backend

__all__ = ["BACKENDS", "OnnxSession", "build_model", "cached_model", "check_backend", "export_module",
           "fuse_transformer", "int8_float_nodes", "quantize_int8"]

logger = logging.getLogger(__name__)

EXPORT_VERSION = 4
"""Bumped when the way models are exported changes, so older cached exports are not reused."""

OPSET = 17
MODEL_FILE = "model.onnx"


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("the onnx backends need onnxruntime and onnx: pip install 'uniret[onnx]'") from e
    return onnxruntime


class _Positional(torch.nn.Module):
    """``fn(features)`` as a module taking the features positionally (``torch.onnx`` passes positional args)."""

    def __init__(self, fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], names: Sequence[str],
                 modules: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.fn, self.names = fn, list(names)
        self.held = torch.nn.ModuleList(modules)  # so that parameters are found and exported as initialisers

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.fn(dict(zip(self.names, tensors, strict=True)))


def export_module(fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], example: Mapping[str, torch.Tensor],
                  path: str | Path, *, modules: Sequence[torch.nn.Module] = (), output_name: str = "output",
                  output_axes: Mapping[int, str] | None = None, opset: int = OPSET) -> Path:
    """Export ``fn(features) -> tensor`` to ONNX at ``path``.

    ``example`` maps input names to ``(batch, sequence)`` tensors; both axes are dynamic for every input. It
    must contain padding (rows of different lengths), so that the traced graph keeps the attention mask.
    ``modules`` are the torch modules ``fn`` calls (put in eval mode for the export). ``output_axes`` names
    the output's dynamic axes (default: axis 0 is the batch; pass ``{0: "batch", 1: "sequence"}`` for token
    outputs such as MLM logits).
    """
    masks = [t for name, t in example.items() if name == "attention_mask"]
    if masks and bool(masks[0].all()):
        raise ValueError("the example batch for an ONNX export must contain padding (rows of different lengths); "
                         "a graph traced without padding can ignore the attention mask")
    path = Path(path)
    names = list(example)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic[output_name] = dict(output_axes or {0: "batch"})
    wrapper = _Positional(fn, names, modules)
    states = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings(), eager_attention(modules):
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks of the padded example
            warnings.filterwarnings("ignore", message=".*advanced indexing.*")
            torch.onnx.export(wrapper, tuple(example[n] for n in names), str(path), dynamo=False,
                              input_names=names, output_names=[output_name], dynamic_axes=dynamic,
                              opset_version=opset, do_constant_folding=True)
    finally:
        for m, state in zip(modules, states, strict=True):
            m.train(state)
    logger.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


@contextlib.contextmanager
def eager_attention(modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Hugging Face models inside ``modules`` switched to the eager attention while exporting, then back.

    The eager path exports as plain MatMul / Softmax with an additive mask, the pattern ONNX Runtime fuses into
    its ``Attention`` kernel; the SDPA path (transformers' default) exports as a larger graph that runs slower."""
    switched: list[tuple[Any, str]] = []
    for module in modules:
        for sub in module.modules():
            current = getattr(getattr(sub, "config", None), "_attn_implementation", None)
            if hasattr(sub, "set_attn_implementation") and current not in (None, "eager"):
                switched.append((sub, str(current)))
    try:
        for sub, _ in switched:
            sub.set_attn_implementation("eager")
        yield
    finally:
        for sub, implementation in switched:
            sub.set_attn_implementation(implementation)


FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert", "electra": "bert",
           "mpnet": "bert"}
"""Hugging Face ``model_type`` -> ONNX Runtime transformer optimizer model type, for encoder models whose
attention, embedding and layer-norm subgraphs it fuses into single kernels."""


UNFUSED = ("SkipLayerNormFusion",)
"""ONNX Runtime graph fusions left off, in the export and in every session: on the CPU its
``SkipLayerNormalization`` kernel is ~4x slower than the ``Add`` + ``LayerNormalization`` it replaces
(5.6 vs 1.2 ms on 2,048 x 384 floats, 2 threads; the same numbers to 1e-6), which made the int8 model ~11%
slower end to end (``benchmarks/encode_throughput.py``)."""


def fuse_transformer(source: str | Path, destination: str | Path, config: Any) -> bool:
    """ONNX Runtime's transformer optimizer (Attention, EmbedLayerNormalization and BiasGelu fusions; not
    SkipLayerNormalization, see :data:`UNFUSED`) for a model of a :data:`FUSABLE` type; True when
    ``destination`` was written."""
    kind = FUSABLE.get(getattr(config, "model_type", None) or "")
    if kind is None:
        return False
    _onnxruntime()
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(kind)
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    model = optimizer.optimize_model(str(source), model_type=kind, opt_level=0, optimization_options=options,
                                     num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                                     hidden_size=int(getattr(config, "hidden_size", 0) or 0))
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    logger.info("ONNX Runtime fusions: %s", fused)
    model.save_model_to_file(str(destination))
    return True


INT8_KEEP_FLOAT = r"(^|/)layers?\.0/(output/dense|mlp/down_proj)/MatMul$"
"""Matrix products that ``onnx-int8`` keeps in float (a regular expression on the exported node names): the
first layer's feed-forward output projection (BERT ``layer.0/output/dense``, Llama-style ``layers.0/mlp/down_proj``).
Its input, the GELU output, quantises worst: kept float, it cut the int8 model's cosine error to fp32 more than
any other single product, for about 1/18 of the model's matrix FLOPs (``benchmarks/int8_sensitivity.py``;
BENCHMARKS.md, encoding backends)."""


def int8_float_nodes(model: Any, pattern: str = INT8_KEEP_FLOAT) -> list[str]:
    """Names of the ``MatMul`` nodes of ``model`` (an ``onnx.ModelProto``) that :func:`quantize_int8` keeps float."""
    rule = re.compile(pattern)
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and rule.search(n.name)]


def quantize_int8(source: str | Path, destination: str | Path, *, keep_float: str = INT8_KEEP_FLOAT) -> Path:
    """ONNX Runtime dynamic quantisation: MatMul (and fused Attention) weights to int8 per output channel,
    activations to uint8 per (sub-)batch, except the products ``keep_float`` names (:data:`INT8_KEEP_FLOAT`).
    Embedding tables (Gather) stay float: quantising them costs accuracy."""
    _onnxruntime()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept = int8_float_nodes(onnx.load(str(source), load_external_data=False), keep_float)
    logger.info("int8: %d matrix product(s) kept float: %s", len(kept), ", ".join(kept) or "none")
    quantize_dynamic(str(source), str(destination), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Attention"], nodes_to_exclude=kept,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fused ops have no shape info
    return Path(destination)


def build_model(folder: Path, fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                example: Mapping[str, torch.Tensor], *, modules: Sequence[torch.nn.Module], backend: str,
                config: Any = None, output_name: str = "output", output_axes: Mapping[int, str] | None = None) -> Path:
    """Export ``fn`` (:func:`export_module`), fuse it when ``config`` names a :data:`FUSABLE` model, and
    quantise it for ``onnx-int8``; writes ``folder/model.onnx`` (the ``build`` of :func:`cached_model`)."""
    check_backend(backend)
    current = export_module(fn, example, folder / "export.onnx", modules=modules, output_name=output_name,
                            output_axes=output_axes)
    if config is not None and fuse_transformer(current, folder / "fused.onnx", config):
        current.unlink()
        current = folder / "fused.onnx"
    if backend == "onnx-int8":
        quantize_int8(current, folder / MODEL_FILE)
        current.unlink()
    else:
        current.rename(folder / MODEL_FILE)
    return folder / MODEL_FILE


def cache_key(**settings: Any) -> str:
    """A short digest of the settings an export depends on (model hash, backend, inputs, versions)."""
    ort = _onnxruntime()
    full = {**settings, "export_version": EXPORT_VERSION, "opset": OPSET, "torch": torch.__version__,
            "onnxruntime": ort.__version__}
    return hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_model(settings: Mapping[str, Any], build: Callable[[Path], None]) -> Path:
    """The ONNX file for ``settings``: loaded from the cache, else built by ``build(folder)`` (which writes
    :data:`MODEL_FILE` into ``folder``) and stored atomically, with the settings beside it."""
    key = cache_key(**settings)
    dest = cache_dir("onnx") / key
    model = dest / MODEL_FILE
    if model.is_file():
        logger.info("ONNX model reused from cache %s", dest)
        return model
    logger.info("exporting the model to ONNX (once; cached in %s)", dest)
    with atomic_directory(dest, kind="onnx-export") as tmp:
        build(tmp)
        if not (tmp / MODEL_FILE).is_file():
            raise RuntimeError(f"the ONNX export wrote no {MODEL_FILE} into {tmp}")
        write_text_atomic(tmp / "settings.json", json.dumps(dict(settings), indent=2, sort_keys=True, default=str))
    return model


def default_threads() -> int:
    """``$UNIRET_ONNX_THREADS`` when set, else torch's intra-op thread count."""
    value = os.environ.get("UNIRET_ONNX_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"UNIRET_ONNX_THREADS must be a positive integer, got {value!r}")
        return int(value)
    return torch.get_num_threads()


SUB_BATCH_TOKENS = 1024
"""ONNX Runtime runs each batch in sub-batches of at most this many tokens (rows x padded length; at least one
row). The caller's batch (tokenisation, padding, progress) is unchanged. With all-MiniLM-L6-v2 at length 256 on
2 cores the int8 model ran 18-28% faster in sub-batches of 4 rows than in one run of 32 (the fp32 model, and
torch, within a few percent either way); see BENCHMARKS.md, encoding backends."""


class OnnxSession:
    """An ONNX Runtime session with every graph optimisation on (but :data:`UNFUSED`) and ``threads``
    intra-op threads; :meth:`run` feeds it sub-batches of at most ``sub_batch_tokens`` tokens.
    ``optimized_model``: also write the graph ONNX Runtime runs, after its optimisations, to this path (to
    inspect which kernels it fused).

    ``device`` "cuda..." uses CUDA where this onnxruntime build has it, else the CPU."""

    def __init__(self, path: str | Path, *, threads: int | None = None, device: str = "cpu",
                 sub_batch_tokens: int = SUB_BATCH_TOKENS, optimized_model: str | Path | None = None) -> None:
        ort = _onnxruntime()
        if sub_batch_tokens < 1:
            raise ValueError(f"sub_batch_tokens must be at least 1, got {sub_batch_tokens}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.threads = threads or default_threads()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if optimized_model is not None:
            options.optimized_model_filepath = str(optimized_model)
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.path = Path(path)
        self.sub_batch_tokens = sub_batch_tokens
        self.session = ort.InferenceSession(str(path), options, providers=providers,
                                            disabled_optimizers=list(UNFUSED))
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, features: Mapping[str, torch.Tensor | np.ndarray]) -> np.ndarray:
        """The (first) output for ``features`` (only the inputs the graph has are passed), computed in
        sub-batches of rows and concatenated along the batch axis."""
        feeds = {}
        for name in self.input_names:
            if name not in features:
                raise ValueError(f"{self.path}: the ONNX model needs input {name!r}; got {', '.join(features)}")
            value = features[name]
            feeds[name] = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        shape = next(iter(feeds.values())).shape
        rows = max(1, self.sub_batch_tokens // max(1, shape[1] if len(shape) > 1 else 1))
        if shape[0] <= rows:
            return self.session.run(None, feeds)[0]
        parts = [self.session.run(None, {k: v[i:i + rows] for k, v in feeds.items()})[0]
                 for i in range(0, shape[0], rows)]
        return np.concatenate(parts, axis=0)

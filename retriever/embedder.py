"""The dense embedder: a backbone plus a pooling, one class for encoder and decoder-only models.

``Embedder.build("all-MiniLM-L6-v2")`` or ``Embedder.build("smollm2-135m", pooling="last-token",
bidirectional=True, lora={})`` composes

    tokens -> backbone (BERT-like encoder, or Llama/Qwen/Mistral decoder, causal or bidirectional)
           -> pooling (cls | mean | last-token | weighted-mean) in float32
           -> Matryoshka truncation -> L2 normalisation

Queries get task instructions and in-context examples (:mod:`uniret.retriever.prompts`); documents are
encoded as they are. Decoder inputs end with the EOS token, which last-token pooling reads (left and right
padding both work). LoRA adapters (peft) and gradient checkpointing are switches for training.

A saved embedder is a sentence-transformers folder (``SentenceTransformer(path)`` loads it; decoder
backbones need ``trust_remote_code=True`` because their input module,
:class:`uniret.retriever.bidirectional.DecoderTransformer`, lives in uniret) plus ``uniret_embedder.json``
with everything uniret adds, restored by :meth:`Embedder.load` and by ``DenseEncoder(path)``.
LoRA weights are merged into the saved backbone. Only safetensors and JSON are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from uniret import __version__
from uniret.assets import content_hash, resolve_model
from uniret.retriever.bidirectional import (
    DecoderTransformer,
    UnsupportedModelError,
    check_bidirectional_support,
    decoder_hidden_states,
    enable_bidirectional,
)
from uniret.retriever.dense import pad_token_ids, token_ids
from uniret.retriever.pooling import _ST_POOLING, canonical_pooling, matryoshka, pool
from uniret.retriever.prompts import DEFAULT_QUERY_TEMPLATE, QueryPrompts
from uniret.runtime import resolve_device

logger = logging.getLogger(__name__)

CONFIG_FILE = "uniret_embedder.json"
FORMAT_VERSION = 1
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT-like, decoders


def set_attention_dropout(config: Any, p: float) -> None:
    """Set the attention-probability dropout of a transformers config (BERT-like or decoder naming)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"attention_dropout must be in [0, 1), got {p}")
    keys = [k for k in ATTENTION_DROPOUT_KEYS if hasattr(config, k)]
    if not keys:
        raise ValueError(f"model type {config.model_type!r} has no attention dropout setting "
                         f"(looked for {', '.join(ATTENTION_DROPOUT_KEYS)})")
    for k in keys:
        setattr(config, k, p)


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """``auto``: bfloat16 on CUDA, float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto or one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def backbone_kind(config: Any) -> str:
    """``encoder`` (bidirectional, masked-LM family) or ``decoder`` (causal LM family), from the model type."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(f"encoder-decoder backbones ({config.model_type}) are not supported; "
                                    "use an encoder or a decoder-only model")
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    logger.warning("model type %r is neither a masked-LM nor a causal-LM type: treating it as an encoder",
                   config.model_type)
    return "encoder"


def _lora_config(lora: dict[str, Any], kind: str) -> Any:
    try:
        from peft import LoraConfig
    except ImportError as e:
        from uniret.errors import MissingExtraError

        raise MissingExtraError("peft", "llm") from e
    cfg: dict[str, Any] = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                           "target_modules": DEFAULT_LORA_TARGETS if kind == "decoder" else None}
    renames = {"alpha": "lora_alpha", "dropout": "lora_dropout"}
    cfg.update({renames.get(k, k): v for k, v in lora.items()})
    try:
        return LoraConfig(**cfg)
    except TypeError as e:
        raise ValueError(f"invalid LoRA settings {lora!r}: {e}") from None


def _merged_state_dict(peft_model: Any) -> dict[str, torch.Tensor]:
    """The backbone's weights with every active LoRA delta added, without touching the model."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and not module.merged:
                layer: Any = module  # lora.Linear and friends: get_delta_weight lives on the concrete layers
                key = f"{name}.weight"
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        state[key] = state[key] + layer.get_delta_weight(adapter).to(state[key].dtype)
    return state


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# -- the embedder ---------------------------------------------------------------------------------------
class Embedder(torch.nn.Module):
    """A trainable dense embedder; see the module docstring. Build with :meth:`build`, restore with :meth:`load`."""

    backbone: Any  # a transformers PreTrainedModel, or a peft PeftModel around one

    def __init__(self, backbone: torch.nn.Module, tokenizer: Any, *, name: str, pooling: str = "mean",
                 normalize: bool = True, bidirectional: bool = False, max_length: int = 256,
                 prompts: QueryPrompts | None = None, matryoshka_dim: int | None = None,
                 append_eos: bool | None = None, padding_side: str | None = None, path: str | None = None,
                 history: dict[str, Any] | None = None) -> None:
        super().__init__()
        config: Any = cast(Any, backbone).config
        self.name = name
        self.model_type: str = config.model_type
        self.kind = backbone_kind(config)
        self.pooling = canonical_pooling(pooling)
        self.normalize = bool(normalize)
        self.max_length = int(max_length)
        self.prompts = prompts or QueryPrompts()
        self.hidden_size = int(config.hidden_size)
        if matryoshka_dim is not None and not 0 < int(matryoshka_dim) <= self.hidden_size:
            raise ValueError(f"matryoshka_dim must be in 1..{self.hidden_size} (the backbone's hidden size), "
                             f"got {matryoshka_dim}")
        self.matryoshka_dim = int(matryoshka_dim) if matryoshka_dim is not None else None
        if self.kind == "decoder":
            if bidirectional:
                check_bidirectional_support(self.model_type)
                enable_bidirectional(backbone)
            self.bidirectional = bool(bidirectional)
            self.append_eos = self.pooling == "last-token" if append_eos is None else bool(append_eos)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
                logger.info("%s: the tokenizer has no padding token; padding with EOS %r", name, tokenizer.eos_token)
        else:
            self.bidirectional = True  # encoders always attend both ways
            self.append_eos = bool(append_eos)
        self.padding_side = padding_side or getattr(tokenizer, "padding_side", "right") or "right"
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.path = path
        self.history = dict(history or {})  # LoRA merged into the weights, source model, ...
        self._token_type_ids = self.kind == "encoder" and "token_type_ids" in getattr(
            tokenizer, "model_input_names", [])
        self._hash: str | None = None
        self._source_path: str | None = path  # the weights this embedder started from
        self._source_hash: str | None = None
        self._weights_version = self._parameter_version()
        self.eval()  # like from_pretrained: dropout off until the trainer calls train()

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def build(cls, backbone: str, *, pooling: str = "mean", normalize: bool = True, bidirectional: bool = False,
              max_length: int = 256, instructions: dict[str, str] | None = None,
              default_instruction: str | None = None, query_template: str = DEFAULT_QUERY_TEMPLATE,
              icl_examples: list[tuple[str, str]] | None = None, matryoshka_dim: int | None = None,
              lora: dict[str, Any] | None = None, gradient_checkpointing: bool = False, device: str = "auto",
              dtype: str | torch.dtype = "auto", append_eos: bool | None = None,
              padding_side: str | None = None, attention_dropout: float | None = None) -> Embedder:
        """A fresh embedder on ``backbone`` (an alias from :mod:`uniret.assets`, a folder or a hub name).

        ``lora``: None for full fine-tuning, else LoraConfig settings (``{}`` for the defaults: r=8,
        alpha=16, dropout 0.05, q/k/v/o projections on decoders). ``append_eos`` defaults to decoders with
        last-token pooling; ``padding_side`` to the tokenizer's. ``attention_dropout`` overrides the
        backbone's dropout on attention probabilities (None keeps its config's); 0 lets PyTorch's fused
        attention kernels run in training, which on CPU makes a BERT training step ~1.8x faster.
        """
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = resolve_model(backbone)
        config = AutoConfig.from_pretrained(path)
        if bidirectional and backbone_kind(config) == "decoder":
            check_bidirectional_support(config.model_type)  # before loading any weights
        if attention_dropout is not None:
            set_attention_dropout(config, attention_dropout)
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        model = AutoModel.from_pretrained(path, config=config, dtype=torch_dtype).to(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        prompts = QueryPrompts(instructions=instructions or {}, default_instruction=default_instruction,
                               query_template=query_template, icl_examples=icl_examples or [])
        self = cls(model, tokenizer, name=str(backbone), pooling=pooling, normalize=normalize,
                   bidirectional=bidirectional, max_length=max_length, prompts=prompts,
                   matryoshka_dim=matryoshka_dim, append_eos=append_eos, padding_side=padding_side,
                   history={"source": str(backbone)})
        self._source_path = path
        if lora is not None:
            self.add_lora(lora)
        if gradient_checkpointing:
            self.enable_gradient_checkpointing()
        return self

    def add_lora(self, lora: dict[str, Any]) -> None:
        """Wrap the backbone with LoRA adapters; only their weights stay trainable."""
        from peft import get_peft_model

        if self.lora is not None:
            raise ValueError("the backbone already has LoRA adapters")
        if self.kind != "decoder":
            logger.info("LoRA on an encoder backbone: target modules %s", lora.get("target_modules", "peft's default"))
        config = _lora_config(lora, self.kind)
        self.backbone = get_peft_model(self.backbone, config)
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in self.parameters())
        logger.info("LoRA r=%d on %s: %d of %d parameters trainable", config.r, sorted(config.target_modules or []),
                    n_train, n_all)
        self._weights_version = self._parameter_version()

    @property
    def lora(self) -> dict[str, Any] | None:
        """The LoRA settings of the live adapters, or None."""
        peft_config = getattr(self.backbone, "peft_config", None)
        if not peft_config:
            return None
        cfg = next(iter(peft_config.values()))
        return {"r": cfg.r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
                "target_modules": sorted(cfg.target_modules or [])}

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (non-reentrant, so LoRA and frozen embeddings work)."""
        enable = getattr(self.backbone, "activation_checkpointing_enable", None)  # transformers >= 5
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(self.backbone.config, "use_cache"):
            self.backbone.config.use_cache = False

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", dtype: str | torch.dtype = "auto") -> Embedder:
        """Restore an embedder saved by :meth:`save`: weights, pooling, attention, prompts, dimension."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(resolve_model(path))
        cfg_file = folder / CONFIG_FILE
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{folder} is not a saved uniret embedder ({CONFIG_FILE} is missing); "
                                    "use Embedder.build(path) to start one from these weights")
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        if cfg.get("format") != FORMAT_VERSION:
            raise ValueError(f"{cfg_file}: format {cfg.get('format')!r} is not supported (expected {FORMAT_VERSION})")
        recorded = cfg["backbone"]["model_type"]
        actual = AutoConfig.from_pretrained(folder).model_type
        if actual != recorded:
            raise ValueError(f"{folder}: {CONFIG_FILE} records model type {recorded!r} but config.json holds "
                             f"{actual!r}; the folder is inconsistent")
        device = resolve_device(device)
        model = AutoModel.from_pretrained(folder, dtype=resolve_dtype(dtype, device)).to(device)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return cls(model, tokenizer, name=str(path), pooling=cfg["pooling"], normalize=cfg["normalize"],
                   bidirectional=cfg["bidirectional"], max_length=cfg["max_length"],
                   prompts=QueryPrompts.from_dict(cfg.get("prompts") or {}), matryoshka_dim=cfg.get("matryoshka_dim"),
                   append_eos=cfg["append_eos"], padding_side=cfg["padding_side"], path=str(folder),
                   history=cfg.get("history"))

    # -- the trainer's API ------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self.matryoshka_dim or self.hidden_size

    @property
    def device(self) -> str:
        return str(next(self.backbone.parameters()).device)

    def format_queries(self, queries: list[str], tasks: list[str | None] | None = None,
                       instructions: list[str | None] | None = None) -> list[str]:
        """Queries as the model reads them: instruction template and in-context examples applied."""
        return self.prompts.format(queries, tasks, instructions)

    def set_max_length(self, max_length: int) -> None:
        """Encode (and save) at ``max_length`` tokens from now on."""
        self.max_length = int(max_length)

    def token_ids(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        """Unpadded token ids, truncated to ``max_length`` (default: the embedder's), EOS added for decoders."""
        return token_ids(self.tokenizer, texts, max_length or self.max_length, append_eos=self.append_eos)

    def collate(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """Pad token ids to the batch maximum on ``padding_side``; tensors on :attr:`device`."""
        return pad_token_ids(ids, pad_id=self.tokenizer.pad_token_id or 0, padding_side=self.padding_side,
                             device=self.device, token_type_ids=self._token_type_ids)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.collate(self.token_ids(texts))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings ``(B, dimension)`` in float32: pooled, truncated, normalised; differentiable."""
        input_ids, mask = features["input_ids"], features["attention_mask"]
        if self.kind == "decoder":
            hidden = decoder_hidden_states(self.backbone, input_ids, mask, bidirectional=self.bidirectional)
        else:
            inputs = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in features}
            hidden = self.backbone(**inputs).last_hidden_state
        return matryoshka(pool(hidden.float(), mask, self.pooling), self.matryoshka_dim, self.normalize)

    def embed_queries(self, queries: list[str], tasks: list[str | None] | None = None,
                      instructions: list[str | None] | None = None) -> torch.Tensor:
        return self(self.tokenize(self.format_queries(queries, tasks, instructions)))

    def embed_documents(self, docs: list[str]) -> torch.Tensor:
        return self(self.tokenize(docs))

    # -- the encoder protocol (inference through DenseEncoder's length-sorted loop) ----------------
    def as_encoder(self, **kwargs: Any) -> Any:
        """A :class:`~uniret.retriever.dense.DenseEncoder` over this embedder (keyword arguments go to it)."""
        from uniret.retriever.dense import DenseEncoder

        kwargs.setdefault("max_length", self.max_length)
        return DenseEncoder(self, **kwargs)

    def encode_queries(self, texts: list[str], tasks: list[str | None] | None = None,
                       instructions: list[str | None] | None = None, *, batch_size: int = 32,
                       show_progress: bool | None = None) -> np.ndarray:
        formatted = self.format_queries(list(texts), tasks, instructions)
        return self.as_encoder(batch_size=batch_size).encode(formatted, desc="encoding queries",
                                                             show_progress=show_progress)

    def encode_documents(self, texts: list[str], *, batch_size: int = 32,
                         show_progress: bool | None = None) -> np.ndarray:
        return self.as_encoder(batch_size=batch_size).encode(list(texts), desc="encoding documents",
                                                             show_progress=show_progress)

    # -- identity ---------------------------------------------------------------------------------
    def _parameter_version(self) -> int:
        """Sum of the parameters' in-place version counters: changes whenever an optimiser step runs."""
        return sum(p._version for p in self.parameters())

    def settings(self) -> dict[str, Any]:
        """Everything that, with the weights, decides the embeddings (written to ``uniret_embedder.json``)."""
        return {
            "format": FORMAT_VERSION,
            "backbone": {"kind": self.kind, "model_type": self.model_type, "hidden_size": self.hidden_size},
            "pooling": self.pooling,
            "normalize": self.normalize,
            "bidirectional": self.bidirectional,
            "max_length": self.max_length,
            "append_eos": self.append_eos,
            "padding_side": self.padding_side,
            "matryoshka_dim": self.matryoshka_dim,
            "dimension": self.dimension,
            "prompts": self.prompts.to_dict(),
        }

    def _source_digest(self) -> str:
        if self._source_hash is None:
            src = self._source_path
            self._source_hash = content_hash(src) if src and Path(src).is_dir() else f"hub:{src}"
        return self._source_hash

    @property
    def identity(self) -> dict[str, Any]:
        """Like ``DenseEncoder.identity``; ``hash`` is the saved folder's content hash while the weights are
        those of :attr:`path`, else a digest marking unsaved weights."""
        saved = self.path is not None and self._parameter_version() == self._weights_version
        if not saved:
            self._hash = None
            digest = hashlib.sha256(json.dumps([self._source_digest(), self.history, self.settings()],
                                               sort_keys=True).encode())
            trained = self._parameter_version() != self._weights_version
            tag = f"unsaved-{digest.hexdigest()[:12]}" + (f"-trained-{id(self):x}-{self._parameter_version()}"
                                                         if trained else "")
        elif self._hash is None:
            self._hash = content_hash(self.path)  # type: ignore[arg-type]
        return {
            "type": "dense",
            "name": self.name,
            "path": self.path if saved else None,
            "hash": self._hash if saved else tag,
            "dimension": self.dimension,
            "similarity": "cosine" if self.normalize else "dot",
            "max_length": self.max_length,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "bidirectional": self.bidirectional,
            "backbone_kind": self.kind,
            "model_type": self.model_type,
            "matryoshka_dim": self.matryoshka_dim,
            "default_instruction": self.prompts.default_instruction,
            "query_template": self.prompts.query_template,
            "instructions": dict(self.prompts.instructions),
            "icl_examples": len(self.prompts.icl_examples),
        }

    # -- saving -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a sentence-transformers folder plus ``uniret_embedder.json``, atomically; LoRA is merged."""
        from uniret.atomic import atomic_directory

        path = Path(path).resolve()
        with atomic_directory(path, kind="model") as tmp:
            self._save_backbone(tmp)
            self._save_sentence_transformers(tmp)
            settings = {**self.settings(), "uniret_version": __version__,
                        "history": {**self.history, **({"lora_merged": self.lora} if self.lora else {})}}
            _write_json(tmp / CONFIG_FILE, settings)
        self.path = str(path)
        self.history = settings["history"]
        self._hash = None
        self._weights_version = self._parameter_version()
        logger.info("saved %s embedder (%s, %s pooling, dim %d) to %s", self.kind, self.model_type, self.pooling,
                    self.dimension, path)
        return path

    def _save_backbone(self, folder: Path) -> None:
        if self.lora is not None:
            base = self.backbone.get_base_model()
            base.save_pretrained(folder, state_dict=_merged_state_dict(self.backbone))
        else:
            self.backbone.save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config.pop("use_cache", None)  # gradient checkpointing turned it off; inference wants the default
        _write_json(folder / "config.json", config)
        max_length, side = self.tokenizer.model_max_length, self.tokenizer.padding_side
        self.tokenizer.model_max_length, self.tokenizer.padding_side = self.max_length, self.padding_side
        try:
            self.tokenizer.save_pretrained(folder)
        finally:
            self.tokenizer.model_max_length, self.tokenizer.padding_side = max_length, side

    def _save_sentence_transformers(self, folder: Path) -> None:
        import sentence_transformers
        import transformers
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

        def ref(cls: type) -> str:
            return f"{cls.__module__}.{cls.__qualname__}"

        module_config: dict[str, Any] = {"max_seq_length": self.max_length, "do_lower_case": False}
        if self.kind == "decoder":
            first = ref(DecoderTransformer)
            module_config.update(bidirectional=self.bidirectional, append_eos=self.append_eos,
                                 padding_side=self.padding_side)
        else:
            first = ref(Transformer)
        _write_json(folder / "sentence_bert_config.json", module_config)
        modules = [{"idx": 0, "name": "0", "path": "", "type": first}]
        heads: list[Any] = [Pooling(self.hidden_size, pooling_mode=_ST_POOLING[self.pooling])]
        if self.matryoshka_dim is not None:  # truncation as an exact 0/1 projection, before normalising
            heads.append(Dense(self.hidden_size, self.matryoshka_dim, bias=False, activation_function=None,
                               init_weight=torch.eye(self.hidden_size)[: self.matryoshka_dim].clone()))
        if self.normalize:
            heads.append(Normalize())
        for idx, module in enumerate(heads, start=1):
            sub = f"{idx}_{type(module).__name__}"
            (folder / sub).mkdir()
            module.save(str(folder / sub))
            modules.append({"idx": idx, "name": str(idx), "path": sub, "type": ref(type(module))})
        _write_json(folder / "modules.json", modules)
        _write_json(folder / "config_sentence_transformers.json", {
            "__version__": {"sentence_transformers": sentence_transformers.__version__,
                            "transformers": transformers.__version__, "pytorch": torch.__version__},
            "prompts": self.prompts.sentence_transformers_prompts(),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if self.normalize else "dot",
            "model_type": "SentenceTransformer",
        })

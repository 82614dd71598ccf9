"""Decoder-only backbones for embedding: bidirectional attention (as in LLM2Vec and KaLM-Embedding-V2),
the shared forward pass, and the sentence-transformers input module that restores both on load.

Bidirectional attention is switched on in two places, because transformers picks the attention pattern
in two places: every attention module gets ``is_causal = False`` (read by the flash-attention kernels and
by SDPA when no mask is passed), and the forward pass hands the model a 4D padding-only mask built by
``transformers.masking_utils.create_bidirectional_mask`` in the format of the model's attention
implementation (boolean for SDPA, additive for eager); model code passes a 4D mask through unchanged.
Sliding windows are not applied to such a mask, so every token attends to every other real token.

Only the model types in :data:`BIDIRECTIONAL_MODEL_TYPES` are accepted (their attention modules and mask
builders were checked to behave as above); any other type raises :class:`UnsupportedModelError` instead of
silently running causal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import torch
from sentence_transformers.sentence_transformer.modules import Transformer

from uniret.errors import UniretError
from uniret.retriever.dense import pad_token_ids, token_ids

logger = logging.getLogger(__name__)

BIDIRECTIONAL_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class UnsupportedModelError(UniretError, ValueError):
    """A backbone cannot be used the way it was asked (e.g. bidirectional attention for an unchecked type)."""


def check_bidirectional_support(model_type: str) -> None:
    if model_type not in BIDIRECTIONAL_MODEL_TYPES:
        raise UnsupportedModelError(
            f"bidirectional attention is not supported for model type {model_type!r} (supported: "
            f"{', '.join(BIDIRECTIONAL_MODEL_TYPES)}); use bidirectional=False for causal attention"
        )


def enable_bidirectional(model: torch.nn.Module) -> int:
    """Set ``is_causal = False`` on every attention module of ``model``; returns how many were changed."""
    config = getattr(model, "config", None)
    check_bidirectional_support(getattr(config, "model_type", type(model).__name__))
    changed = 0
    for module in model.modules():
        if getattr(module, "is_causal", None) is True:
            cast(Any, module).is_causal = False
            changed += 1
    if changed == 0:
        raise UnsupportedModelError(f"{type(model).__name__}: found no attention module with an is_causal flag; "
                                    "this transformers version builds attention differently")
    return changed


def padding_only_mask(model: torch.nn.Module, attention_mask: torch.Tensor) -> Any:
    """A bidirectional ``(B, 1, L, L)`` mask hiding only padding keys, in the model's mask format."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError as e:  # transformers < 4.56
        raise UnsupportedModelError("bidirectional attention needs transformers>=4.56 "
                                    "(transformers.masking_utils.create_bidirectional_mask)") from e
    dtype = next(model.parameters()).dtype
    shape = (attention_mask.shape[0], attention_mask.shape[1], 0)
    probe = torch.empty(shape, dtype=dtype, device=attention_mask.device)  # only shape, dtype and device are read
    return create_bidirectional_mask(config=cast(Any, model).config, inputs_embeds=probe,
                                     attention_mask=attention_mask.bool(),
                                     allow_is_bidirectional_skip=False)


def decoder_forward(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                    bidirectional: bool) -> Any:
    """The output of a decoder-only model (a backbone, or a causal LM with its vocabulary head) for a padded batch.

    Position ids count real tokens only, so a left-padded sequence gets the positions it would have alone;
    ``bidirectional``: every token attends to every real token (padding keys hidden).
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    mask = padding_only_mask(model, attention_mask) if bidirectional else attention_mask
    return model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)


def decoder_hidden_states(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                          bidirectional: bool) -> torch.Tensor:
    """Last hidden states ``(B, L, H)`` of a decoder backbone (:func:`decoder_forward`)."""
    return decoder_forward(model, input_ids, attention_mask, bidirectional=bidirectional).last_hidden_state


class DecoderTransformer(Transformer):
    """sentence-transformers input module for decoder backbones saved by uniret's ``Embedder``.

    Referenced from ``modules.json`` as ``uniret.retriever.bidirectional.DecoderTransformer``; it tokenizes
    with a final EOS token (for last-token pooling) and runs :func:`decoder_hidden_states`, bidirectional
    when ``sentence_bert_config.json`` says so. sentence-transformers>=6 imports module classes outside its
    own package only with ``SentenceTransformer(path, trust_remote_code=True)``.
    """

    config_keys = [*Transformer.config_keys, "max_seq_length", "bidirectional", "append_eos", "padding_side"]

    def __init__(self, model_name_or_path: str, *, bidirectional: bool = False, append_eos: bool = True,
                 padding_side: str = "right", **kwargs: Any) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.bidirectional = bool(bidirectional)
        self.append_eos = bool(append_eos)
        self.padding_side = padding_side
        tokenizer: Any = self.tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if self.bidirectional:
            enable_bidirectional(self.auto_model)

    def token_ids(self, inputs: Sequence[Any], prompt: str | None = None) -> list[list[int]]:
        """Token ids of each text (prompt prepended), truncated to ``max_seq_length``."""
        if not all(isinstance(x, str) for x in inputs):
            raise TypeError(f"{type(self).__name__} encodes text only")
        texts = [prompt + t for t in inputs] if prompt else list(inputs)
        return token_ids(cast(Any, self.tokenizer), texts, self.max_seq_length, append_eos=self.append_eos)

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, processing_kwargs: Any = None,
                   **kwargs: Any) -> dict[str, Any]:
        return pad_token_ids(self.token_ids(inputs, prompt), pad_id=cast(Any, self.tokenizer).pad_token_id,
                             padding_side=self.padding_side)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features["token_embeddings"] = decoder_hidden_states(
            self.auto_model, features["input_ids"], features["attention_mask"], bidirectional=self.bidirectional)
        return features

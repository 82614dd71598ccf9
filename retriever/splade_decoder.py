"""SPLADE on a decoder-only causal LM: the sentence-transformers input module that turns SmolLM2 (or any causal
LM) into per-token vocabulary logits for ``SpladePooling``, in its two variants (``echo`` and
``bidirectional``), and the per-token logit background that makes an untrained LM head's vectors sparse.

:mod:`uniret.retriever.splade` composes it into :class:`~uniret.retriever.splade.SparseModel`. Saved models
name this module's class in ``modules.json``; models saved before it moved here name
``uniret.retriever.splade.DecoderSpladeTransformer``, which :mod:`uniret.retriever.splade` still exports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules.transformer import Transformer

from uniret.retriever.batching import progress_bar
from uniret.retriever.bidirectional import DecoderTransformer, decoder_forward

DECODER_VARIANTS = ("echo", "bidirectional")
LOGIT_OFFSET_FILE = "logit_offset.safetensors"  # a decoder model's per-token logit offset, when it has one


class DecoderSpladeTransformer(DecoderTransformer):
    """A decoder-only causal LM as a sentence-transformers input module whose ``token_embeddings`` are its
    vocabulary logits, for ``SpladePooling``: the dense ``DecoderTransformer`` (tokenization, pad token,
    bidirectional attention, position ids) with the LM head kept and no final EOS.

    ``variant="echo"``: each text is fed twice (``text text``) and the attention mask handed to pooling covers
    only the second copy, whose positions have all seen the whole text under causal attention.
    ``variant="bidirectional"``: attention is made non-causal (every token sees every real token).

    An optional per-token **logit offset** (:meth:`set_logit_offset`, saved as ``logit_offset.safetensors``
    beside the weights) is subtracted from the logits: a causal LM's head scores most of its vocabulary above
    zero in every context, so ``log(1 + relu(.))`` of raw logits is dense and led by tokens that are likely
    everywhere; less a background level per token (:func:`logit_background`), a term counts where the text
    makes it likelier than it is in a typical document.
    """

    config_keys = [*Transformer.config_keys, "max_seq_length", "variant"]

    def __init__(self, model_name_or_path: str, *, variant: str = "echo", **kwargs: Any) -> None:
        if variant not in DECODER_VARIANTS:
            raise ValueError(f"unknown decoder SPLADE variant {variant!r}; expected one of "
                             + ", ".join(DECODER_VARIANTS))
        kwargs["transformer_task"] = "text-generation"
        super().__init__(model_name_or_path, bidirectional=variant == "bidirectional", append_eos=False,
                         padding_side="right", **kwargs)
        self.variant = variant
        self.logit_offset: torch.Tensor | None
        self.register_buffer("logit_offset", None, persistent=False)  # saved in its own file (save())
        offset_file = Path(model_name_or_path) / LOGIT_OFFSET_FILE
        if offset_file.is_file():
            from safetensors.torch import load_file

            self.set_logit_offset(load_file(str(offset_file))["logit_offset"])

    def set_logit_offset(self, offset: torch.Tensor | None) -> None:
        """Subtract ``offset`` (one value per vocabulary token) from the logits from now on; None: no offset."""
        if offset is not None:
            size = self.auto_model.get_output_embeddings().weight.shape[0]
            if tuple(offset.shape) != (size,):
                raise ValueError(f"logit offset has shape {tuple(offset.shape)}; expected ({size},), one value per "
                                 "row of the LM head")
            offset = offset.detach().float().to(self.auto_model.device)
        self.logit_offset = offset

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        super().save(output_path, *args, **kwargs)
        if self.logit_offset is not None:
            from safetensors.torch import save_file

            save_file({"logit_offset": self.logit_offset.cpu().contiguous()},
                      str(Path(output_path) / LOGIT_OFFSET_FILE))

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, processing_kwargs: Any = None,
                   **kwargs: Any) -> dict[str, Any]:
        from uniret.retriever.dense import pad_token_ids

        ids = self.token_ids(inputs, prompt)
        if self.variant == "echo":
            ids = [x + x for x in ids]
        batch = pad_token_ids(ids, pad_id=self.tokenizer.pad_token_id, padding_side=self.padding_side)  # type: ignore[attr-defined]
        if self.variant == "echo":
            pool = torch.zeros_like(batch["attention_mask"])
            for row, x in enumerate(ids):
                pool[row, len(x) // 2 : len(x)] = 1
            batch["pool_mask"] = pool
        return batch

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        mask = features["attention_mask"]
        logits = decoder_forward(self.auto_model, features["input_ids"], mask, bidirectional=self.bidirectional).logits
        if self.logit_offset is not None:
            logits = logits - self.logit_offset.to(logits.dtype)
        out = dict(features)  # the caller's features stay as they were (gradient caching replays them)
        out["token_embeddings"] = logits
        out["attention_mask"] = features.get("pool_mask", mask)
        return out


@torch.inference_mode()
def logit_background(lm: DecoderSpladeTransformer, texts: Sequence[str], *, sd: float = 0.25,
                     batch_size: int = 8) -> torch.Tensor:
    """A background level per vocabulary token: over ``texts`` (a sample of the corpus), the mean plus ``sd``
    standard deviations of each token's logit max-pooled over a text's (pooled) positions, with no offset.
    Max pooling commutes with a per-token offset, so less this level a token is active exactly where the
    text lifts its logit that far above how high it typically reaches in a document."""
    if len(texts) < 2:
        raise ValueError(f"a logit background needs at least 2 texts; got {len(texts)}")
    saved, was_training = lm.logit_offset, lm.training
    lm.logit_offset = None
    lm.eval()
    try:
        pooled, bar = [], progress_bar(len(texts), desc="splade: logit background")
        for start in range(0, len(texts), batch_size):
            feats = lm.preprocess(list(texts[start : start + batch_size]))
            feats = {k: v.to(lm.auto_model.device) for k, v in feats.items()}
            out = lm.forward(feats)
            mask = out["attention_mask"].unsqueeze(-1).to(torch.bool)
            logits = out["token_embeddings"].float()
            pooled.append(torch.where(mask, logits, torch.full((), -torch.inf, device=logits.device)).amax(1).cpu())
            bar.update(len(feats["input_ids"]))
        bar.close()
    finally:
        lm.logit_offset = saved
        lm.train(was_training)
    stacked = torch.cat(pooled)
    return stacked.mean(0) + sd * stacked.std(0)

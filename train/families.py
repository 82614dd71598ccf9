"""Training hooks of the trainable families (registered in :mod:`uniret.families` by name).

A family's :class:`TrainingHooks` say how ``uniret train`` builds its model and training module from a
:class:`~uniret.train.config.TrainConfig`, which config section holds its loss, and how a model being trained
is searched (dev evaluation, iterative re-mining). The pipeline calls only these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingHooks:
    build: Callable[[Any], tuple[Any, Any]]  # TrainConfig -> (model, training module)
    loss_section: str  # the TrainConfig field holding this family's loss settings
    search_backend: Callable[[Any], Any] | None = None  # model -> an empty search backend over it
    callbacks: Callable[[Any, Any], list[Any]] | None = None  # (TrainConfig, module) -> extra trainer callbacks


def _build_dense(cfg: Any) -> tuple[Any, Any]:
    from uniret.retriever.embedder import Embedder
    from uniret.train.biencoder import BiEncoderModule

    m = cfg.model
    icl = [(q, p) for q, p in m.icl_examples] if m.icl_examples else None
    model = Embedder.build(m.backbone, pooling=m.pooling, normalize=m.normalize, bidirectional=m.bidirectional,
                           max_length=m.max_length, instructions=m.instructions,
                           default_instruction=m.default_instruction, query_template=m.query_template,
                           icl_examples=icl, matryoshka_dim=m.matryoshka_dim, lora=m.lora,
                           gradient_checkpointing=m.gradient_checkpointing, device=m.device, dtype=m.dtype,
                           attention_dropout=m.attention_dropout)
    if m.freeze:
        freeze_parameters(model.backbone, m.freeze)
    return model, BiEncoderModule(model, cfg.loss, grad_cache_chunk=cfg.trainer.grad_cache_chunk)


def freeze_parameters(module: Any, prefixes: list[str]) -> int:
    """Stop training the parameters of ``module`` whose names start with one of ``prefixes`` (a whole dotted
    component: ``encoder.layer.1`` matches ``encoder.layer.1.attention...``, not ``encoder.layer.10``); returns
    how many tensors were frozen. A prefix that matches nothing is an error naming the top-level modules."""
    named = list(module.named_parameters())
    frozen = 0
    for prefix in prefixes:
        hits = [p for name, p in named if name == prefix or name.startswith(prefix.rstrip(".") + ".")]
        if not hits:
            tops = sorted({name.split(".")[0] for name, _ in named})
            raise ValueError(f"model.freeze: {prefix!r} matches no parameter of the backbone; its parameter names "
                             f"start with {', '.join(tops)} (e.g. {named[0][0]!r})")
        for p in hits:
            p.requires_grad_(False)
        frozen += len(hits)
    n_frozen = sum(p.numel() for _, p in named if not p.requires_grad)
    logger.info("froze %d parameter tensors (%d of %d weights) under %s", frozen, n_frozen,
                sum(p.numel() for _, p in named), ", ".join(prefixes))
    return frozen


def _dense_backend(model: Any) -> Any:
    from uniret.index.faiss_index import FaissIndex

    return FaissIndex(model, "flat")


def _build_cross_encoder(cfg: Any) -> tuple[Any, Any]:
    from uniret.retriever.reranker import CrossEncoderReranker
    from uniret.train.crossencoder import CrossEncoderModule

    m = cfg.model
    model = CrossEncoderReranker(m.backbone, max_length=m.max_length, device=m.device,
                                 attention_dropout=m.attention_dropout)
    return model, CrossEncoderModule(model, cfg.rerank_loss, chunk=cfg.trainer.grad_cache_chunk)


def _build_sparse(cfg: Any) -> tuple[Any, Any]:
    from uniret.retriever.splade import POOLINGS, SparseModel
    from uniret.train.biencoder import BiEncoderModule
    from uniret.train.losses.flops import FlopsRegularizer

    m = cfg.model
    if m.pooling not in POOLINGS:
        raise ValueError(f"model.pooling: a sparse model pools with {' or '.join(POOLINGS)}, got {m.pooling!r}")
    idf = None
    if m.inference_free:
        from uniret.data import load_beir

        idf = [d.full_text() for d in load_beir(cfg.data.data).corpus]  # IDF over the training data's corpus
    background = None
    if m.background_docs:
        import random

        from uniret.data import load_beir

        corpus = list(load_beir(cfg.data.data).corpus)
        if m.background_docs > len(corpus):
            raise ValueError(f"model.background_docs: {m.background_docs} documents asked for; the corpus of "
                             f"{cfg.data.data} has {len(corpus)}")
        sample = random.Random(cfg.trainer.seed).sample(range(len(corpus)), m.background_docs)
        background = [corpus[i].full_text() for i in sorted(sample)]
    learned = m.query_weights == "learned"
    model = SparseModel.build(m.backbone, variant=m.variant, pooling=m.pooling, max_length=m.max_length, idf=idf,
                              lora=m.lora, gradient_checkpointing=m.gradient_checkpointing, device=m.device,
                              top_k=m.top_k, learn_query_weights=learned, background=background,
                              background_sd=m.background_sd,
                              background_max_length=m.inference_max_length or m.max_length,
                              freeze_query_encoder=m.query_encoder == "frozen")
    f = cfg.flops
    regularizer = None
    if f.query_weight > 0 or f.document_weight > 0:  # IDF-aware weights: the IDF the query side starts from
        regularizer = FlopsRegularizer(f, model.idf, queries_trainable=learned or not model.routed)
    elif f.idf_aware:
        raise ValueError("flops.idf_aware is set but flops.query_weight and flops.document_weight are 0")
    return model, BiEncoderModule(model, cfg.loss, grad_cache_chunk=cfg.trainer.grad_cache_chunk,
                                  regularizer=regularizer)


def _sparse_backend(model: Any) -> Any:
    from uniret.index.sparse import SparseIndex
    from uniret.retriever.splade import SpladeEncoder

    return SparseIndex(SpladeEncoder(model))


def _sparse_callbacks(cfg: Any, module: Any) -> list[Any]:
    from uniret.train.losses.flops import FlopsWarmup
    from uniret.train.trainer import ClampParameters

    callbacks: list[Any] = []
    if module.regularizer is not None and cfg.flops.warmup_steps > 0:
        callbacks.append(FlopsWarmup(module.regularizer))
    if (weights := module.embedder.trainable_query_weights) is not None:
        callbacks.append(ClampParameters([weights], minimum=0.0))  # learned query weights stay non-negative
    return callbacks


DENSE = TrainingHooks(build=_build_dense, loss_section="loss", search_backend=_dense_backend)
CROSS_ENCODER = TrainingHooks(build=_build_cross_encoder, loss_section="rerank_loss")
SPARSE = TrainingHooks(build=_build_sparse, loss_section="loss", search_backend=_sparse_backend,
                       callbacks=_sparse_callbacks)


def _build_generative(cfg: Any) -> tuple[Any, Any]:
    from uniret.data import load_beir
    from uniret.retriever.generative import GenerativeRetriever, GenerativeSettings
    from uniret.train.generative import GenerativeModule

    m, g = cfg.model, cfg.generative
    settings = GenerativeSettings(scheme=g.scheme, tasks=list(g.tasks), prompt_length=g.prompt_length,
                                  template=g.template, max_length=m.max_length, max_new_tokens=g.max_new_tokens,
                                  search_keys=list(g.search_keys), search_options=dict(g.search_options))
    model = GenerativeRetriever.build(m.backbone, settings, lora=m.lora, device=m.device, dtype=m.dtype)
    if m.gradient_checkpointing:
        model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, GenerativeModule(model, g, load_beir(cfg.data.data).corpus)


def _generative_backend(model: Any) -> Any:
    from uniret.index.generative import GenerativeIndex

    return GenerativeIndex(model)


GENERATIVE = TrainingHooks(build=_build_generative, loss_section="generative", search_backend=_generative_backend)

"""The training recipe as typed dataclasses; ``uniret train --config cfg.yaml`` maps the YAML onto
:class:`TrainConfig` one-to-one (unknown keys are errors naming the key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from uniret.train.biencoder import LossConfig
from uniret.train.crossencoder import RerankLossConfig
from uniret.train.generative import GenerativeConfig
from uniret.train.losses.flops import FlopsConfig
from uniret.train.mining import MiningConfig
from uniret.train.trainer import TrainerConfig


@dataclass
class ModelConfig:
    kind: str = "dense"  # a trainable family of uniret.families: dense | cross-encoder
    backbone: str = "all-MiniLM-L6-v2"  # alias, local folder or hub name
    pooling: Literal["cls", "mean", "last-token", "weighted-mean", "max", "sum"] = "mean"  # sparse: max | sum
    normalize: bool = True
    bidirectional: bool = False  # decoder backbones only
    max_length: int = 256  # training length
    # The length the trained model is saved with (what `uniret eval --model OUT/model` encodes at without
    # --max-length), and the length the dev split and the WiSE-FT sweep evaluate at. None: max_length.
    # Dense and sparse families.
    inference_max_length: int | None = None
    instructions: dict[str, str] | None = None  # task -> instruction (queries only)
    default_instruction: str | None = None
    query_template: str = "Instruct: {instruction}\nQuery: {query}"
    icl_examples: list[list[str]] | None = None  # [[query, positive], ...] placed before each query
    matryoshka_dim: int | None = None
    lora: dict[str, Any] | None = None  # peft LoraConfig arguments, e.g. {r: 16, alpha: 32}
    gradient_checkpointing: bool = False
    # Parameters left as they are: prefixes of the backbone's parameter names, e.g. [embeddings, encoder.layer.0]
    # (dense family; see uniret.train.families.freeze_parameters)
    freeze: list[str] | None = None
    attention_dropout: float | None = None  # None: the backbone's; 0 lets fused attention kernels train (faster)
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on a GPU, fp32 on CPU
    variant: str | None = None  # sparse: mlm (encoders, the default) | echo | bidirectional (decoder-only LMs)
    inference_free: bool = False  # sparse: queries are tokenizer + IDF weights from the training corpus
    # inference-free queries: idf (fixed, the default) | learned (a per-token weight vector initialised from IDF and
    # trained, as sentence-transformers' inference-free models do; give it its own rate with
    # trainer.learning_rate_mapping, e.g. {"sub_modules\\.query\\.": 1.0e-2}; clamped at 0 after each step, as
    # inference keeps only positive weights); either way the query is a lookup
    query_weights: str = "idf"
    # sparse: shared (one SPLADE encoder for queries and documents, the default) | frozen (the query side keeps the
    # backbone's weights and only the document side trains: a sentence-transformers Router of two copies, saved as
    # one SparseEncoder; the trained model's queries are the base model's, which holds them where the base was)
    query_encoder: str = "shared"
    top_k: int | None = None  # sparse: keep at most this many terms per vector at inference
    # Sparse decoder variants: subtract a per-token background level from the LM head's logits, computed before
    # training over this many documents of the training data's corpus (seeded sample; 0: off) as the mean plus
    # background_sd standard deviations of each token's max-pooled logit (uniret.retriever.splade_decoder.logit_background)
    background_docs: int = 0
    background_sd: float = 0.25  # chosen on a SciFact train slice (60 queries, 300 docs): 0.1830 vs 0.1797 at 0.5, 0.1737 at 0

    def __post_init__(self) -> None:
        from uniret import families

        if self.kind not in families.names(trainable=True):
            raise ValueError(f"model.kind: got {self.kind!r}; expected a trainable family: "
                             + ", ".join(families.names(trainable=True)))
        if self.query_weights not in ("idf", "learned"):
            raise ValueError(f"model.query_weights: got {self.query_weights!r}; expected idf or learned")
        if self.query_encoder not in ("shared", "frozen"):
            raise ValueError(f"model.query_encoder: got {self.query_encoder!r}; expected shared or frozen")
        if self.query_encoder == "frozen" and (self.kind != "sparse" or self.inference_free):
            raise ValueError("model.query_encoder: frozen is for sparse models with a query encoder (model.kind: "
                             "sparse, model.inference_free: false)")
        if self.query_weights == "learned" and not (self.kind == "sparse" and self.inference_free):
            raise ValueError("model.query_weights: learned needs an inference-free sparse model "
                             "(model.kind: sparse, model.inference_free: true)")
        if isinstance(self.background_docs, bool) or not isinstance(self.background_docs, int) \
                or self.background_docs < 0 or self.background_docs == 1:
            raise ValueError(f"model.background_docs: got {self.background_docs!r}; expected 0 (off) or an "
                             "integer of at least 2")
        if self.background_docs and not (self.kind == "sparse" and self.variant in ("echo", "bidirectional")):
            raise ValueError("model.background_docs is for sparse models on decoder-only LMs "
                             "(model.kind: sparse, model.variant: echo or bidirectional)")
        if self.freeze and self.kind != "dense":
            raise ValueError(f"model.freeze is implemented for the dense family only, not {self.kind!r}")
        if self.inference_max_length is not None:
            n = self.inference_max_length
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"model.inference_max_length must be a positive integer, got {n!r}")
            if self.kind not in ("dense", "sparse"):
                raise ValueError(f"model.inference_max_length is implemented for the dense and sparse families, "
                                 f"not {self.kind!r}")


@dataclass
class DataConfig:
    data: str = "scifact"  # BEIR directory or packaged data set name
    split: str = "train"
    train_file: str | None = None  # ready TrainingRecord JSONL (skips building records from qrels/mining)
    holdout_queries: int = 0  # carve a dev split of this many training queries (never trained on)
    holdout_seed: int = 0
    unsupervised_pairs_per_doc: int = 0  # > 0: add Contriever-style cropped pairs from the corpus


@dataclass
class TeacherSpec:
    kind: Literal["bm25", "dense", "splade", "cross-encoder"]
    model: str | None = None  # dense / splade / cross-encoder: alias or folder
    weight: float = 1.0


@dataclass
class TeachersConfig:
    teachers: list[TeacherSpec] = field(default_factory=list)
    normalization: Literal["minmax", "zscore"] = "minmax"


@dataclass
class EvalConfig:
    dev: bool = True  # evaluate on the held-out dev split after training (needs data.holdout_queries)
    dev_docs: int = 0  # 0: the whole corpus; else the dev queries' judged documents plus random others
    batch_size: int = 64
    # Out-of-domain guard: BEIR folders or packaged data set names (never the training data), evaluated on
    # their full ``ood_split`` with the base model before training and the trained model after, as
    # ``uniret eval --retriever KIND --model M --max-length OOD_MAX_LENGTH`` would; see uniret.train.ood.
    ood: list[str] = field(default_factory=list)
    ood_split: str = "test"
    ood_max_length: int = 256
    ood_metric: str = "ndcg@10"  # the metric whose before/after difference is reported and guarded


@dataclass
class InterpolateConfig:
    """WiSE-FT: the final weights are alpha * trained + (1 - alpha) * base (the same weighted mean of state
    dicts as checkpoint averaging). With several alphas, each is evaluated on the dev split and the
    ``eval.ood`` sets and one is chosen by the rule: the best dev ``metric`` among the alphas whose
    ``eval.ood_metric`` drops by at most ``max_ood_drop`` against the base model on every ``eval.ood`` set
    (ties: the larger alpha); if none qualifies, the alpha with the smallest worst drop. Never the test split."""

    alpha: float | list[float] = 1.0
    metric: str = "ndcg@10"  # dev metric maximised by the rule
    max_ood_drop: float = 0.005

    def __post_init__(self) -> None:
        alphas = self.alphas
        if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
            raise ValueError(f"interpolate.alpha: got {self.alpha!r}; expected a number in [0, 1] or a non-empty "
                             "list of them")
        if self.max_ood_drop < 0:
            raise ValueError(f"interpolate.max_ood_drop: got {self.max_ood_drop}; expected >= 0")

    @property
    def alphas(self) -> list[float]:
        return [float(a) for a in (self.alpha if isinstance(self.alpha, list) else [self.alpha])]


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mining: MiningConfig | None = None
    teachers: TeachersConfig | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    rerank_loss: RerankLossConfig = field(default_factory=RerankLossConfig)
    flops: FlopsConfig = field(default_factory=FlopsConfig)  # sparse models' sparsity regulariser
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)  # generative retrievers
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    remine_every_epochs: int = 0  # iterative re-mining with the model being trained (ANCE-style)
    average_last_checkpoints: int = 0  # > 1: the final model is the mean of the last N checkpoints
    eval: EvalConfig = field(default_factory=EvalConfig)
    interpolate: InterpolateConfig | None = None  # WiSE-FT with the base model (after any checkpoint averaging)

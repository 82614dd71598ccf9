"""The ``hybrid`` family: two or more saved (or freshly built) indexes of any families, fused per query.

Fusion goes through the kernel's one fusion function, :func:`uniret.scores.fuse_runs` (the same one mining's
hybrid uses): reciprocal rank fusion, or weighted interpolation of per-query normalised scores (min-max or
z-score). Each member retrieves ``max(k, depth)`` hits per query, the fused list is cut to ``k`` in
trec_eval's order.

Fusion specs (``--fusion``, :func:`parse_fusion`):

- ``rrf`` or ``rrf:K`` -- reciprocal rank fusion with constant ``K`` (default 60), equal weights;
- ``minmax:W`` / ``zscore:W`` -- interpolation of normalised scores; with two members the first gets weight
  ``W`` and the second ``1 - W``; ``minmax:W1,W2,...`` gives one weight per member; ``minmax`` alone weighs
  every member 1.

A saved hybrid is a directory with ``manifest.json`` (kind ``hybrid``) whose settings list the members as paths
relative to the hybrid directory, plus the fusion. Members built in this process are saved inside it
(``members/0-bm25``, ...); members loaded from disk are referenced where they are, so a hybrid over two existing
indexes costs one small JSON file::

    {"kind": "hybrid", ..., "settings": {"fusion": "rrf", "method": "rrf", "weights": [1.0, 1.0], "rrf_k": 60,
     "normalization": "minmax", "depth": 100,
     "members": [{"path": "../scifact-bm25", "kind": "lucene-bm25"}, {"path": "../scifact-dense", "kind": "faiss"}]}}
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniret.data import Corpus, Document, Run
from uniret.errors import IndexMismatchError
from uniret.index.manifest import atomic_directory, corpus_identity, read_manifest, write_manifest
from uniret.scores import fuse_runs, top_k

logger = logging.getLogger(__name__)

KIND = "hybrid"
DEFAULT_MEMBERS = ("bm25", "dense")
MEMBERS_DIR = "members"


@dataclass(frozen=True)
class Fusion:
    """How member runs are fused: arguments of :func:`uniret.scores.fuse_runs`."""

    method: str = "rrf"  # rrf | interpolate
    weights: tuple[float, ...] | None = None  # None: 1 per member
    rrf_k: int = 60
    normalization: str = "minmax"  # interpolate: minmax | zscore
    spec: str = "rrf"  # as written by the user

    def weights_for(self, n: int) -> list[float]:
        if self.weights is None:
            return [1.0] * n
        if len(self.weights) == 1 and n == 2:
            w = self.weights[0]
            return [w, 1.0 - w]
        if len(self.weights) != n:
            raise ValueError(f"fusion {self.spec!r} gives {len(self.weights)} weight(s) for {n} member indexes; "
                             "give one weight per index (minmax:0.3,0.7) or one weight W for two indexes")
        return list(self.weights)


def parse_fusion(spec: str) -> Fusion:
    """``rrf`` | ``rrf:K`` | ``minmax[:W[,W...]]`` | ``zscore[:W[,W...]]`` (see the module docstring)."""
    text = str(spec).strip()
    name, _, arg = text.partition(":")
    name = name.strip().lower()
    expected = "expected rrf, rrf:K, minmax:W or zscore:W (e.g. minmax:0.3)"
    if name == "rrf":
        if not arg:
            return Fusion(spec=text)
        try:
            k = int(arg)
        except ValueError:
            raise ValueError(f"bad fusion {spec!r}: the RRF constant must be a positive integer; {expected}") from None
        if k < 1:
            raise ValueError(f"bad fusion {spec!r}: the RRF constant must be a positive integer; {expected}")
        return Fusion(rrf_k=k, spec=text)
    if name in ("minmax", "zscore", "interpolate"):
        normalization = "minmax" if name == "interpolate" else name
        if not arg:
            return Fusion(method="interpolate", normalization=normalization, spec=text)
        try:
            weights = tuple(float(w) for w in arg.split(","))
        except ValueError:
            raise ValueError(f"bad fusion {spec!r}: weights must be numbers; {expected}") from None
        if any(not (w == w) or w < 0 for w in weights):  # NaN or negative
            raise ValueError(f"bad fusion {spec!r}: weights must be non-negative numbers; {expected}")
        if len(weights) == 1 and not 0.0 <= weights[0] <= 1.0:
            raise ValueError(f"bad fusion {spec!r}: a single weight W must be within [0, 1] (the first index gets "
                             f"W, the second 1 - W); {expected}")
        return Fusion(method="interpolate", weights=weights, normalization=normalization, spec=text)
    raise ValueError(f"unknown fusion {spec!r}; {expected}")


class HybridIndex:
    """The search protocol over several member backends, fused with :func:`uniret.scores.fuse_runs`."""

    kind = KIND

    def __init__(self, members: Sequence[Any], fusion: str | Fusion = "rrf", *, depth: int = 100,
                 member_paths: Sequence[str | Path | None] | None = None) -> None:
        if len(members) < 2:
            raise ValueError(f"a hybrid index fuses two or more indexes; got {len(members)}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"hybrid depth must be a positive integer, got {depth!r}")
        self.members = list(members)
        self.fusion = fusion if isinstance(fusion, Fusion) else parse_fusion(fusion)
        self.weights = self.fusion.weights_for(len(self.members))
        self.depth = depth
        self.member_paths: list[Path | None] = (
            [Path(p) if p is not None else None for p in member_paths] if member_paths is not None
            else [None] * len(self.members))
        if len(self.member_paths) != len(self.members):
            raise ValueError(f"{len(self.member_paths)} member paths for {len(self.members)} members")
        self._corpus: Corpus | None = None
        self._source_manifest: dict[str, Any] | None = None
        self._member_manifests: list[dict[str, Any] | None] = [
            read_manifest(p) if p is not None else None for p in self.member_paths]
        self._check_same_corpus()

    # -- construction from saved indexes --------------------------------------------------------------
    @classmethod
    def from_paths(cls, paths: Sequence[str | Path], fusion: str | Fusion = "rrf", *, depth: int = 100,
                   device: str = "auto", encoders: Sequence[Any] | None = None) -> HybridIndex:
        """A hybrid over saved indexes of any families (each loaded by its manifest's kind)."""
        from uniret.index import load_index

        if len(paths) < 2:
            raise ValueError(f"a hybrid index fuses two or more indexes; got {len(paths)} (pass --index twice)")
        encoders = list(encoders) if encoders is not None else [None] * len(paths)
        if len(encoders) != len(paths):
            raise ValueError(f"{len(encoders)} encoders for {len(paths)} member indexes")
        members = []
        for p, enc in zip(paths, encoders, strict=True):
            if read_manifest(p)["kind"] == KIND:
                raise IndexMismatchError(f"{p} is itself a hybrid index; list its member indexes instead")
            members.append(load_index(p, **({"encoder": enc} if enc is not None else {}), device=device))
        return cls(members, fusion, depth=depth, member_paths=paths)

    def _check_same_corpus(self) -> None:
        seen = [(p, m.get("corpus") or {}) for p, m in zip(self.member_paths, self._member_manifests, strict=True)
                if m is not None]
        prints = {c.get("fingerprint") for _, c in seen if c.get("fingerprint")}
        if len(prints) > 1:
            raise IndexMismatchError("the member indexes were built from different corpora: " + "; ".join(
                f"{p}: {c.get('source')} ({c.get('num_docs')} documents, fingerprint {c.get('fingerprint')})"
                for p, c in seen) + "; a hybrid fuses indexes of one corpus")

    # -- the protocol ---------------------------------------------------------------------------------
    def index(self, corpus: Corpus) -> None:
        for i, member in enumerate(self.members):
            logger.info("hybrid: indexing member %d/%d (%s)", i + 1, len(self.members), member.kind)
            member.index(corpus)
        self.member_paths = [None] * len(self.members)
        self._member_manifests = [None] * len(self.members)
        self._corpus = corpus

    def member_runs(self, queries: Mapping[str, str], k: int = 10) -> list[Run]:
        """Each member's run at depth ``max(k, depth)``."""
        return [m.search(queries, k=max(k, self.depth)) for m in self.members]

    def fuse(self, runs: Sequence[Run], k: int) -> Run:
        fused = fuse_runs(runs, self.fusion.method, self.weights, rrf_k=self.fusion.rrf_k,
                          normalization=self.fusion.normalization)
        return {q: top_k(hits, k) for q, hits in fused.items()}

    def search(self, queries: Mapping[str, str], k: int = 10) -> Run:
        fused = self.fuse(self.member_runs(queries, k), k)
        return {q: fused.get(q, {}) for q in queries}

    def matched_terms(self, query: str, doc_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Matched query terms per document, from the members that can tell (e.g. a sparse member)."""
        out: dict[str, dict[str, float]] = {}
        for m in self.members:
            fn = getattr(m, "matched_terms", None)
            if callable(fn):
                for d, terms in fn(query, doc_ids).items():
                    out.setdefault(d, {}).update(terms)
        return out

    @property
    def num_docs(self) -> int:
        for m in self._member_manifests:
            if m is not None:
                return int(m["num_docs"])
        if self._corpus is not None:
            return len(self._corpus)
        if self._source_manifest is not None:
            return int(self._source_manifest.get("num_docs", 0))
        counts = [m.describe().get("num_docs") for m in self.members]
        return int(counts[0]) if counts and counts[0] is not None else 0

    def _corpus_identity(self) -> dict[str, Any] | None:
        if self._corpus is not None:
            return corpus_identity(self._corpus)
        for m in self._member_manifests:
            if m is not None and m.get("corpus"):
                return dict(m["corpus"])
        return corpus_identity(None, self._source_manifest)

    def identity(self) -> dict[str, Any]:
        members = [_member_identity(m) for m in self.members]
        return {"name": f"hybrid({'+'.join(str(x.get('kind')) for x in members)}; {self.fusion.spec})",
                "members": members}

    def save(self, path: str | Path) -> Path:
        """Write the manifest; members built here are saved inside (``members/I-KIND``), members loaded from disk
        are referenced by a path relative to ``path``."""
        path = Path(path)
        final = path.resolve()
        entries: list[dict[str, Any]] = []
        inside: list[tuple[int, Path]] = []
        with atomic_directory(path) as tmp:
            for i, (member, where) in enumerate(zip(self.members, self.member_paths, strict=True)):
                if where is None:
                    rel = Path(MEMBERS_DIR) / f"{i}-{member.kind}"
                    member.save(tmp / rel)
                    inside.append((i, rel))
                else:
                    src = Path(where).resolve()
                    if src == final or final in src.parents:
                        raise ValueError(f"cannot save the hybrid over {path}: its member {where} lives inside it; "
                                         "save it to another directory")
                    rel = Path(os.path.relpath(src, final))
                entries.append({"path": rel.as_posix(), "kind": member.kind})
            write_manifest(tmp, self.kind, self.num_docs, encoder=self.identity(),
                           settings={"fusion": self.fusion.spec, "method": self.fusion.method,
                                     "weights": self.weights, "rrf_k": self.fusion.rrf_k,
                                     "normalization": self.fusion.normalization, "depth": self.depth,
                                     "members": entries},
                           corpus=self._corpus_identity())
        # members saved inside were written under a temporary name: search their final copies from now on
        from uniret.index import load_index

        for i, rel in inside:
            self.members[i] = load_index(final / rel, **_reuse_encoder(self.members[i]))
            self.member_paths[i] = final / rel
            self._member_manifests[i] = read_manifest(final / rel)
        logger.info("saved hybrid index (%d members, %s) to %s", len(self.members), self.fusion.spec, path)
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: Sequence[Any] | None = None, *, device: str = "auto",
             fusion: str | None = None, depth: int | None = None) -> HybridIndex:
        """Load a saved hybrid and its members. ``encoder``: one encoder (or None) per member, each checked by
        that member's ``load``; ``fusion``/``depth`` override the saved ones."""
        path = Path(path)
        manifest = read_manifest(path, expected_kind=cls.kind)
        settings = manifest.get("settings") or {}
        entries = settings.get("members")
        if not isinstance(entries, list) or len(entries) < 2 or not all(
                isinstance(e, dict) and isinstance(e.get("path"), str) for e in entries):
            raise IndexMismatchError(f"{path / 'manifest.json'}: settings.members must list two or more members as "
                                     '{"path": "relative/path", "kind": ...}')
        paths = [path / e["path"] for e in entries]
        for p, e in zip(paths, entries, strict=True):
            if not (p / "manifest.json").is_file():
                raise IndexMismatchError(f"{path / 'manifest.json'}: member index {e['path']!r} (resolved to {p}) is "
                                         "missing; a hybrid references its members by relative paths, so move "
                                         "them together")
            kind = read_manifest(p)["kind"]
            if e.get("kind") and kind != e["kind"]:
                raise IndexMismatchError(f"{p}: holds a '{kind}' index, the hybrid manifest says '{e['kind']}'")
        if encoder is not None and (isinstance(encoder, (str, bytes)) or not isinstance(encoder, Sequence)):
            raise TypeError("a hybrid index takes one encoder per member (a list), or None")
        saved = Fusion(method=settings.get("method", "rrf"),
                       weights=tuple(settings["weights"]) if settings.get("weights") else None,
                       rrf_k=int(settings.get("rrf_k", 60)), normalization=settings.get("normalization", "minmax"),
                       spec=str(settings.get("fusion", "rrf")))
        self = cls.from_paths(paths, parse_fusion(fusion) if fusion is not None else saved,
                              depth=depth or int(settings.get("depth", 100)), device=device, encoders=encoder)
        self._source_manifest = manifest
        return self

    def document(self, doc_id: str) -> Document | None:
        for m in self.members:
            doc = m.document(doc_id)
            if doc is not None:
                return doc
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "fusion": self.fusion.spec, "method": self.fusion.method, "weights": self.weights,
                "rrf_k": self.fusion.rrf_k, "normalization": self.fusion.normalization, "depth": self.depth,
                "num_docs": self.num_docs, "members": [m.describe() for m in self.members]}


def _member_identity(member: Any) -> dict[str, Any]:
    enc = getattr(member, "encoder", None)
    identity = getattr(enc, "identity", None)
    return {"kind": member.kind, **({"encoder": identity} if isinstance(identity, dict) else {})}


def _reuse_encoder(member: Any) -> dict[str, Any]:
    """Reload a member with the encoder object it already holds (no second copy of a model in memory)."""
    enc = getattr(member, "encoder", None)
    return {"encoder": enc} if enc is not None and hasattr(enc, "encode_queries") else {}


# -- registration hooks (uniret.families) ------------------------------------------------------------------

def _member_configs(cfg: Any) -> list[Any]:
    members = list(getattr(cfg, "members", None) or DEFAULT_MEMBERS)
    if len(members) < 2 or KIND in members:
        raise ValueError(f"a hybrid retriever needs two or more member families (not hybrid), got {members}")
    return [dataclasses.replace(cfg, kind=m, members=None) for m in members]


def build_hybrid(cfg: Any, *, scratch: Path | None = None) -> HybridIndex:
    """A fresh hybrid of the member families ``cfg.members`` (default bm25 + dense), each built by its own
    family from ``cfg``, fused by ``cfg.fusion``."""
    from uniret import families

    fusion = parse_fusion(getattr(cfg, "fusion", "rrf") or "rrf")
    members = []
    for i, mc in enumerate(_member_configs(cfg)):
        members.append(families.get(mc.kind).build_backend(
            mc, scratch=scratch / f"member-{i}" if scratch is not None else None))
    return HybridIndex(members, fusion)


def hybrid_encoders(cfg: Any) -> list[Any]:
    """One encoder per member family, for checking a saved hybrid (``HybridIndex.load(encoder=...)``)."""
    from uniret import families

    return [families.get(mc.kind).build_encoder(mc) if families.get(mc.kind).encoder else None
            for mc in _member_configs(cfg)]

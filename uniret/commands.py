"""The functions behind the CLI commands, importable on their own.

Each command takes typed configuration and explicit keyword arguments, builds the backend it needs and
returns a result; the CLI only parses arguments into these. Like the CLI, this module imports the
wings lazily, inside each function.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from uniret.data import BeirDataset, Document, load_beir
from uniret.families import RetrieverConfig, check_positive

logger = logging.getLogger(__name__)


def build_backend(cfg: RetrieverConfig, *, scratch: Path | None = None) -> Any:
    """A fresh, empty search backend for ``cfg``, built by its family's registration."""
    from uniret import families

    return families.get(cfg.kind).build_backend(cfg, scratch=scratch)


def load_backend(index_dir: str | Path, *, retriever: str | None = None, encoder_cfg: RetrieverConfig | None = None,
                 device: str = "auto", backend: str | None = None) -> Any:
    """Load a saved index; its manifest's kind names the family. ``retriever``, when given, must be that
    family; an ``encoder_cfg`` names the model the user expects, which must be the one the index was built with.
    ``backend`` (without ``encoder_cfg``): encode queries with the index's own encoder on this inference backend."""
    from uniret import families
    from uniret.errors import IndexMismatchError
    from uniret.index import read_manifest

    manifest = read_manifest(index_dir)
    family = families.for_index_kind(manifest["kind"])
    if retriever is not None and retriever != family.name:
        raise IndexMismatchError(f"{index_dir} holds a '{family.name}' index ({manifest['kind']}), but --retriever "
                                 f"{retriever} was given (leave --retriever out: the index decides)")
    built = manifest.get("encoder") or {}
    if encoder_cfg is None and backend is not None and family.encoder and built.get("backend", "torch") != backend:
        source = built.get("path") if built.get("path") and Path(built["path"]).exists() else built.get("name")
        encoder_cfg = RetrieverConfig(kind=family.name, model=str(source), device=device, max_length=built.get("max_length"),
                                      query_prompt=built.get("query_prompt", ""), backend=backend)
    encoder = family.build_encoder(encoder_cfg) if encoder_cfg is not None and family.encoder else None
    return family.backend_class().load(index_dir, encoder=encoder, device=device)


def check_corpus(manifest: dict[str, Any], dataset: BeirDataset, index_dir: str | Path, *, allow_mismatch: bool
                 ) -> str | None:
    """Compare the corpus an index was built from with the data set being evaluated. A mismatch is an
    :class:`~uniret.errors.IndexMismatchError` unless ``allow_mismatch``; returns a note for the report."""
    from uniret.errors import IndexMismatchError

    built = manifest.get("corpus") or {}
    fingerprint = built.get("fingerprint")
    if fingerprint is None:
        logger.warning("%s records no corpus fingerprint (built by an older uniret): cannot check that it indexes "
                       "%s", index_dir, dataset.name)
        return "unchecked: the index records no corpus fingerprint"
    if fingerprint == dataset.corpus.fingerprint:
        return None
    message = (f"{index_dir} was built from a different corpus ({built.get('source')}, {built.get('num_docs')} "
               f"documents, fingerprint {fingerprint}) than {dataset.root} ({len(dataset.corpus)} documents, "
               f"fingerprint {dataset.corpus.fingerprint}): its metrics would be wrong")
    if not allow_mismatch:
        raise IndexMismatchError(message + "; re-index, or pass --allow-corpus-mismatch to evaluate anyway")
    logger.warning("%s (--allow-corpus-mismatch)", message)
    return "mismatch allowed: " + message


def check_inference_backend(manifest: dict[str, Any], searcher: Any, index_dir: str | Path) -> str | None:
    """A note (and a warning) when queries are encoded on another inference backend than the index's documents
    (say int8 documents, fp32 queries): allowed, but the scores mix two numeric precisions."""
    built = (manifest.get("encoder") or {}).get("backend")
    encoder = getattr(searcher, "encoder", None)
    used = (getattr(encoder, "identity", None) or {}).get("backend")
    if built is None and used is None:
        return None
    built, used = built or "torch", used or "torch"
    if built == used:
        return None
    message = (f"{index_dir} was built with the {built} inference backend, its queries are encoded with {used}: "
               "documents and queries differ in numeric precision")
    logger.warning(message)
    return "mixed backends: " + message


def build_index(data: str | Path, cfg: RetrieverConfig, output: str | Path, *, allow_whitespace_ids: bool = False
                ) -> dict[str, Any] | None:
    """Index a BEIR corpus and save it to ``output``; returns the manifest. The output path is checked and
    locked before any work (see :mod:`uniret.atomic`); intermediate files live beside it and are removed.

    With ``cfg.shard_size``, documents stream through shards on disk (``cfg.shards_dir``, default
    ``OUTPUT.shards``, removed once the index is saved), and a rerun after a crash skips finished shards. Under
    ``torchrun`` every rank encodes its share of the shards and the main rank builds and saves the index; the
    other ranks return ``None``."""
    import contextlib
    import dataclasses
    import shutil

    from uniret import distributed
    from uniret.atomic import check_output, output_lock, scratch_directory
    from uniret.index import read_manifest

    launched = distributed.init_from_env()
    main = distributed.is_main()
    if launched and cfg.shard_size is None:
        raise ValueError("under torchrun, 'uniret index' encodes in shards: give --shard-size")
    dataset = load_beir(data, allow_whitespace_ids=allow_whitespace_ids)
    if main:
        check_output(output, protect=[dataset.root], what="--output")
    own_shards = cfg.shard_size is not None and cfg.shards_dir is None
    if own_shards:
        cfg = dataclasses.replace(cfg, shards_dir=str(Path(output).expanduser().resolve()) + ".shards")
    with output_lock(output) if main else contextlib.nullcontext():
        scratch = scratch_directory(output) if main else None  # dense ranks > 0 only encode shards
        try:
            backend = build_backend(cfg, scratch=scratch)
            if cfg.shard_size is not None and not hasattr(backend, "add_shards"):
                raise ValueError(f"--shard-size: the {cfg.kind} family does not index from encoded shards (the "
                                 "dense family does)")
            start = time.perf_counter()
            backend.index(dataset.corpus)
            logger.info("%s %d documents in %.1f s", "indexed" if main else "encoded this rank's shards of",
                        len(dataset.corpus), time.perf_counter() - start)
            if main:
                backend.save(output)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    if main and own_shards:
        shutil.rmtree(cfg.shards_dir, ignore_errors=True)  # type: ignore[arg-type]
    if launched:
        distributed.shutdown()
    return read_manifest(output) if main else None


def search_index(index_dir: str | Path, query: str, k: int = 10, device: str = "auto") -> list[tuple[Document, float]]:
    """Search a saved index for one query; returns ``(document, score)`` best first."""
    return [(doc, score) for doc, score, _ in search_index_explained(index_dir, query, k, device, top_terms=0)]


def search_index_explained(index_dir: str | Path, query: str, k: int = 10, device: str = "auto", *,
                           top_terms: int = 5) -> list[tuple[Document, float, dict[str, float]]]:
    """Like :func:`search_index`, with each hit's top matching terms and their contributions to the score,
    from backends that offer ``explain(query, doc_id, top)`` (the sparse family); ``{}`` from others."""
    from uniret.scores import ranked

    check_positive(k=k)
    backend = load_backend(index_dir, device=device)
    hits = ranked(backend.search({"q": query}, k=k).get("q", {}))
    explain = getattr(backend, "explain", None) if top_terms else None
    out = []
    for doc_id, score in hits:
        doc = backend.document(doc_id) or Document(id=doc_id, text="")
        out.append((doc, score, explain(query, doc_id, top=top_terms) if explain else {}))
    return out


def run_service(indexes: list[str], *, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
                rerankers: list[str] | None = None, api_key: str | None = None, micro_batching: bool = True,
                max_wait_ms: float = 2.0, max_batch: int = 64, max_k: int = 1000, max_queries: int = 64,
                max_body_bytes: int = 1 << 20, fusion: str = "rrf", data: str | None = None,
                split: str = "test") -> None:
    """Serve saved indexes (``PATH`` or ``NAME=PATH`` each) over HTTP until interrupted."""
    from uniret.index.hybrid import parse_fusion
    from uniret.index.serving import Limits, ServiceConfig, index_names

    parse_fusion(fusion)
    check_positive(port=port, max_batch=max_batch, max_k=max_k, max_queries=max_queries,
                   max_body_bytes=max_body_bytes)
    named_rerankers: dict[str, Path] = {}
    for spec in rerankers or []:
        name, sep, folder = spec.partition("=")
        if not sep:
            name, folder = Path(spec.rstrip("/")).name, spec
        named_rerankers[name] = Path(folder)
    config = ServiceConfig(indexes=index_names(indexes), rerankers=named_rerankers, device=device, api_key=api_key,
                           micro_batching=micro_batching, max_wait_ms=max_wait_ms, max_batch=max_batch,
                           hybrid_fusion=fusion, data=data, split=split,
                           limits=Limits(max_k=max_k, max_queries=max_queries, max_body_bytes=max_body_bytes))
    from uniret.index.service import serve

    serve(config, host=host, port=port)


def load_hybrid(index_dirs: list[str | Path], *, fusion: str | None = None, device: str = "auto") -> Any:
    """A hybrid over saved indexes (any families), fused by ``fusion`` (default rrf)."""
    from uniret.index.hybrid import HybridIndex

    return HybridIndex.from_paths(index_dirs, fusion or "rrf", device=device)


def run_eval(data: str | Path | BeirDataset, cfg: RetrieverConfig | None, output_dir: str | Path, *,
             split: str = "test", index_dir: str | Path | list[str | Path] | None = None, fusion: str | None = None,
             model_given: bool = False,
             name: str | None = None, depth: int = 1000, rerank: str | Path | None = None, rerank_depth: int = 100,
             rerank_fusion: float | None = None, allow_corpus_mismatch: bool = False,
             allow_whitespace_ids: bool = False, inference_backend: str | None = None,
             use_mteb: bool = False) -> Any:
    """Evaluate a retriever on a BEIR split and write the report directory; returns the EvalResult.
    ``use_mteb``: mteb indexes, searches (through the backend) and scores (:mod:`uniret.eval.mteb_adapter`).
    With ``index_dir`` the saved index is searched (its manifest names the family; ``cfg`` may be None) and
    its corpus must be the data set's. ``rerank``: a cross-encoder reranker (folder or name) re-scoring the
    top ``rerank_depth`` hits. ``inference_backend``: the query encoder's inference backend for a saved index (default
    the one it was built with); a different one is allowed and noted in the report (``backend_check``)."""
    from uniret.atomic import check_output, output_directory
    from uniret.eval.runner import evaluate_backend

    check_positive(depth=depth, rerank_depth=rerank_depth)
    if cfg is None and index_dir is None:
        raise ValueError("--retriever is needed when no --index is given")
    if use_mteb and (index_dir is not None or rerank is not None):
        raise ValueError("--mteb indexes the corpus itself and scores first-stage runs: it takes neither --index "
                         "nor --rerank")
    dataset = data if isinstance(data, BeirDataset) else load_beir(data, allow_whitespace_ids=allow_whitespace_ids)
    index_dirs = list(index_dir) if isinstance(index_dir, (list, tuple)) else ([index_dir] if index_dir else [])
    check_output(output_dir, protect=[dataset.root, *index_dirs], what="--output-dir")
    corpus_note = backend_note = None
    if len(index_dirs) > 1:
        from uniret.index import read_manifest

        notes = [check_corpus(read_manifest(d), dataset, d, allow_mismatch=allow_corpus_mismatch) for d in index_dirs]
        corpus_note = "; ".join(n for n in notes if n) or None
        backend = load_hybrid(index_dirs, fusion=fusion, device=cfg.device if cfg is not None else "auto")
        built = False
        index_dir = ",".join(str(d) for d in index_dirs)
    elif index_dir is not None:
        index_dir = index_dirs[0]
        from uniret.index import read_manifest

        corpus_note = check_corpus(read_manifest(index_dir), dataset, index_dir, allow_mismatch=allow_corpus_mismatch)
        backend = load_backend(index_dir, retriever=cfg.kind if cfg is not None else None,
                               encoder_cfg=cfg if model_given else None,
                               device=cfg.device if cfg is not None else "auto", backend=inference_backend)
        backend_note = check_inference_backend(read_manifest(index_dir), backend, index_dir)
        built = False
    else:
        assert cfg is not None
        backend = build_backend(cfg)
        built = True
    kind = cfg.kind if cfg is not None and built else backend_family(backend)
    if rerank is not None:
        from uniret.index.rerank import RerankedBackend
        from uniret.retriever.reranker import CrossEncoderReranker

        batch_size = cfg.batch_size if cfg is not None else 32
        backend = RerankedBackend(backend, CrossEncoderReranker(rerank, device=cfg.device if cfg else "auto",
                                                                batch_size=batch_size),
                                  depth=rerank_depth, fusion_weight=rerank_fusion)
        if not built:
            backend.set_corpus(dataset.corpus)
        depth = min(depth, rerank_depth)
    if use_mteb:
        from uniret.eval.mteb_adapter import evaluate_backend_mteb

        with output_directory(output_dir, kind="report", protect=[dataset.root]):
            return evaluate_backend_mteb(backend, dataset, split=split, name=name or kind, output_dir=output_dir,
                                         config={"retriever": asdict(cfg) if cfg is not None else None,
                                                 "family": kind, "split": split, "evaluator": "mteb"})
    with output_directory(output_dir, kind="report", protect=[dataset.root]):
        return evaluate_backend(backend, dataset, split=split, name=name or kind + ("+rerank" if rerank else ""),
                                build_index=built, depth=depth, output_dir=output_dir,
                                config={"retriever": asdict(cfg) if cfg is not None else None, "family": kind,
                                        "split": split, "index": str(index_dir) if index_dir else None,
                                        "corpus_check": corpus_note or "ok" if index_dir else None,
                                        "allow_corpus_mismatch": allow_corpus_mismatch,
                                        "backend_check": backend_note,
                                        "rerank": str(rerank) if rerank else None, "rerank_depth": rerank_depth,
                                        "rerank_fusion": rerank_fusion, "fusion": fusion})


def backend_family(backend: Any) -> str:
    """The registered family of a backend object (by the manifest kind it writes)."""
    from uniret import families

    kind = getattr(backend, "kind", "")
    try:
        return families.for_index_kind(kind).name
    except ValueError:
        return str(kind or "run")


def backend_family_of_index(index_dir: str | Path) -> str:
    """The registered family of a saved index (by its manifest's kind)."""
    from uniret import families
    from uniret.index import read_manifest

    return families.for_index_kind(read_manifest(index_dir)["kind"]).name


# The demo (``uniret demo``) lives in its own module; its entry points are re-exported here with the other commands.
from uniret.demo import DemoResult, run_demo  # noqa: E402, F401

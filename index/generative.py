"""The ``generative`` family's search backend: identifier structures over a corpus, searched by decoding.

``index(corpus)`` tokenises every document with the retriever's tokenizer and builds the identifier
structure of its scheme (:class:`~uniret.retriever.identifiers.NgramIndex` for n-grams,
:class:`~uniret.retriever.identifiers.TitleTrie` for titles). ``search`` decodes each query with
constrained beam search and turns the generated identifiers into a run:

- titles: a document scores the best log-probability of a beam that names it;
- n-grams (SEAL-style, :func:`ngram_document_scores`): every generated n-gram and each of its prefixes gets a
  weight from its LM probability and its corpus frequency, and a document sums the weights of the n-grams
  it contains, each counted for the share of its tokens not already covered by a heavier n-gram. As in SEAL's
  released searcher, the keys can also include the query's own word n-grams that occur in the corpus and the
  LM's most likely first tokens, each weighed by the LM's probability of it (``keys``, :data:`KEY_SOURCES`;
  the default is the model's ``search_keys``). How the weights add up (the weight exponent, SEAL's smoothing
  and repetition coefficient, the longest query key, an optional document-length normalisation, an optional
  BM25-style saturation of a key's occurrences in a document) are
  :data:`~uniret.retriever.generative.SEARCH_OPTIONS`, by default the model's ``search_options``.

A saved index holds the identifier files (``.npy`` or a marisa trie), ``docids.json``, the document store and a
manifest naming the model and its tokenizer. Any model with the same tokenizer and scheme may search it (a
fine-tuned checkpoint reuses the base model's index); another tokenizer is an :class:`IndexMismatchError`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from uniret.data import Corpus, Document, Run
from uniret.errors import IndexMismatchError
from uniret.index.manifest import (
    DocStore,
    StoredDocuments,
    atomic_directory,
    corpus_identity,
    read_manifest,
    write_manifest,
)
from uniret.retriever.generative import (
    SEARCH_OPTIONS,
    check_search_keys,
    check_search_options,
    document_tokens,
)
from uniret.retriever.identifiers import NgramIndex, TitleTrie

logger = logging.getLogger(__name__)

IDS_FILE = "docids.json"


def ngram_weight(logprob: float, count: int, num_tokens: int, smoothing: float = 0.0) -> float:
    """SEAL's n-gram weight ``max(0, log(P(n|q) (1 - P(n)) / (P(n) (1 - P(n|q)))))``: how much more likely the
    LM finds the n-gram for this query than the corpus does (``P(n) = (count + smoothing) / (num_tokens +
    smoothing)``; SEAL smooths with 5, which tempers n-grams seen once or twice). One n-gram of
    :func:`unigram_weights`."""
    return float(unigram_weights(np.array([logprob]), np.array([count]), num_tokens, smoothing)[0])


def unigram_weights(logprobs: np.ndarray, counts: np.ndarray, num_tokens: int, smoothing: float = 0.0
                    ) -> np.ndarray:
    """:func:`ngram_weight` of many keys at once, e.g. every vocabulary token (``logprobs``: the LM's first
    decoding step; ``counts``: each token's occurrences in the corpus; absent keys weigh 0)."""
    n = min(len(logprobs), len(counts))
    lp = np.minimum(np.asarray(logprobs[:n], dtype=np.float64), math.log(1.0 - 1e-9))
    c = np.asarray(counts[:n], dtype=np.float64)
    p_n = np.minimum((c + smoothing) / (num_tokens + smoothing), 1.0 - 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = lp + np.log1p(-p_n) - np.log(p_n) - np.log1p(-np.exp(lp))
    return np.where((c > 0) & np.isfinite(w), np.maximum(w, 0.0), 0.0)


_WORD = re.compile(r"\w+")


def query_keys(query: str, tokenizer: Any, index: NgramIndex, max_words: int = 3) -> list[tuple[int, ...]]:
    """SEAL's query keys: the query's word n-grams of 1 to ``max_words`` words (as written, lower-cased and
    with the first letter upper-cased, each after a space), tokenised, that occur in the corpus."""
    words = _WORD.findall(query)
    strings: set[str] = set()
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + max_words) + 1):
            span = " ".join(words[i:j])
            strings.update((" " + span, " " + span.lower(), " " + span[:1].upper() + span[1:]))
    if not strings:
        return []
    ordered = sorted(strings)
    found: dict[tuple[int, ...], None] = {}
    for ids in tokenizer(ordered, add_special_tokens=False)["input_ids"]:
        key = tuple(int(t) for t in ids)
        if key and key not in found and index.count(key) > 0:
            found[key] = None
    return list(found)


def candidate_ngrams(hypotheses: Sequence[Any]) -> dict[tuple[int, ...], float]:
    """Each generated identifier and each of its prefixes, with its log-probability (the best one when
    several beams share it)."""
    out: dict[tuple[int, ...], float] = {}
    for h in hypotheses:
        total = 0.0
        for i, s in enumerate(h.token_scores):
            total += s
            key = tuple(h.tokens[: i + 1])
            if total > out.get(key, -math.inf):
                out[key] = total
    return out


def ngram_document_scores(ngrams: Mapping[tuple[int, ...], float], index: NgramIndex, *, alpha: float = 2.0,
                          smoothing: float = 0.0, beta: float = 1.0, tf_k1: float = 0.0,
                          weights: Mapping[tuple[int, ...], float] | None = None) -> dict[int, float]:
    """``{document row: score}`` from ``{n-gram tokens: log-probability}``: n-grams in decreasing weight
    (ties: the order given); a document adds ``weight ** alpha`` times ``1 - beta + beta * fresh``, ``fresh``
    the share of the n-gram's distinct tokens it has not yet covered (``beta`` 1: only the fresh share counts;
    SEAL uses 0.8), times ``tf (k1 + 1) / (tf + k1)`` for the n-gram's ``tf`` occurrences in the document
    (``tf_k1`` 0: 1, presence only, as SEAL). ``weights`` adds n-grams whose weight is already known (unigrams
    weighed in bulk; those of weight 0 are left out).
    Documents containing only zero-weight n-grams score 0."""
    weighted = []
    for tokens, logprob in ngrams.items():
        count = index.count(tokens)
        if count:
            weighted.append((ngram_weight(logprob, count, index.num_tokens, smoothing), tokens))
    weighted.extend((w, t) for t, w in (weights or {}).items() if w > 0.0 and t not in ngrams)
    weighted.sort(key=lambda x: -x[0])
    scores: dict[int, float] = {}
    covered: dict[int, set[int]] = {}
    for weight, tokens in weighted:
        distinct = set(tokens)
        for row, tf in index.documents(tokens).items():
            seen = covered.setdefault(row, set())
            fresh = len(distinct - seen) / len(distinct)
            saturation = tf * (tf_k1 + 1.0) / (tf + tf_k1)  # 1 where tf_k1 is 0
            scores[row] = scores.get(row, 0.0) + weight**alpha * (1.0 - beta + beta * fresh) * saturation
            seen |= distinct
    return scores


def length_normalised(scores: Mapping[int, float], relative_lengths: np.ndarray, b: float) -> dict[int, float]:
    """``score / (1 - b + b * relative length)`` of each document (BM25's length norm; ``b`` 0: unchanged)."""
    if b == 0.0:
        return dict(scores)
    return {row: sc / (1.0 - b + b * float(relative_lengths[row])) for row, sc in scores.items()}


def relative_lengths(index: NgramIndex) -> np.ndarray:
    """Each document's token count over the mean."""
    lengths = index.lengths().astype(np.float64)
    return lengths / max(float(lengths.mean()), 1.0)


class KeySet(NamedTuple):
    """One query's candidate n-grams by source (:data:`KEY_SOURCES`): ``{tokens: LM log-probability}`` of the
    beams (and their prefixes) and of the query's n-grams, and the LM's first-step log-probabilities over the
    vocabulary (the unigram keys)."""

    beams: dict[tuple[int, ...], float]
    query: dict[tuple[int, ...], float] | None = None
    first: np.ndarray | None = None

    def ngrams(self, sources: Sequence[str]) -> dict[tuple[int, ...], float]:
        """The n-grams of ``sources`` together, each with its best log-probability."""
        out = dict(self.beams) if "beams" in sources else {}
        for key, logprob in (self.query or {}).items() if "query" in sources else ():
            if logprob > out.get(key, -math.inf):
                out[key] = logprob
        return out


class GenerativeIndex(StoredDocuments):
    """The search protocol over a :class:`~uniret.retriever.generative.GenerativeRetriever`."""

    kind = "generative"

    def __init__(self, model: Any, *, num_beams: int = 10, batch_size: int = 8, alpha: float | None = None,
                 task: str | None = None, constrained: bool = True, max_doc_tokens: int | None = None,
                 keys: Sequence[str] | None = None, smoothing: float | None = None, beta: float | None = None,
                 query_words: int | None = None, length_norm: float | None = None, tf_k1: float | None = None
                 ) -> None:
        self.model = model
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.keys = check_search_keys(list(keys) if keys is not None else model.settings.search_keys,
                                      model.settings.scheme, "generative keys")  # :data:`KEY_SOURCES`
        # :data:`SEARCH_OPTIONS`; None: the model's, else the default
        given = {"alpha": alpha, "smoothing": smoothing, "beta": beta, "query_words": query_words,
                 "length_norm": length_norm, "tf_k1": tf_k1}
        options = check_search_options({**model.settings.search_options,
                                        **{k: v for k, v in given.items() if v is not None}},
                                       "generative search options (the model's search_options and the arguments)",
                                       model.settings.scheme)
        self.alpha = options["alpha"]
        self.smoothing = options["smoothing"]
        self.beta = options["beta"]
        self.query_words = int(options["query_words"])
        self.length_norm = options["length_norm"]
        self.tf_k1 = options["tf_k1"]
        self._relative_lengths: np.ndarray | None = None  # of the indexed documents, once length_norm needs them
        self.task = task if task is not None else model.settings.query_task  # the prompt queries are decoded under
        self.constrained = constrained
        self.max_doc_tokens = max_doc_tokens
        self.scheme: str = model.settings.scheme
        self.structure: NgramIndex | TitleTrie | None = None
        self._ids: list[str] = []
        self._corpus: Corpus | None = None
        self._docstore: DocStore | None = None
        self._source_dir: Path | None = None
        self._source_manifest: dict[str, Any] | None = None
        self._max_title_tokens = 0
        self.index_seconds: float | None = None
        self.stats = {"generated": 0, "valid": 0}  # identifiers generated by search() and how many exist

    @property
    def search_options(self) -> dict[str, float]:
        """This index's :data:`~uniret.retriever.generative.SEARCH_OPTIONS` (the manifest and ``describe`` record
        them)."""
        return {name: getattr(self, name) for name in SEARCH_OPTIONS}

    # -- building -------------------------------------------------------------------------------------
    def tokenize_documents(self, docs: Sequence[Document]) -> list[list[int]]:
        """The token ids identifiers are cut from: whole documents (n-grams) or titles."""
        texts = [d.full_text() for d in docs] if self.scheme == "ngram" else [d.title for d in docs]
        return document_tokens(self.model.tokenizer, texts, self.max_doc_tokens if self.scheme == "ngram" else None)

    def index(self, corpus: Corpus) -> None:
        start = time.perf_counter()
        docs = list(corpus)
        tokens = self.tokenize_documents(docs)
        if self.scheme == "ngram":
            self.structure = NgramIndex.build(tokens)
        else:
            missing = sum(1 for t in tokens if not t)
            if missing:
                logger.warning("%d of %d documents have no title: the title scheme cannot retrieve them", missing,
                               len(docs))
            self.structure = TitleTrie.build(tokens)
            self._max_title_tokens = max((len(t) for t in tokens), default=1)
        self._ids = [d.id for d in docs]
        self._corpus = corpus
        self._relative_lengths = None
        self.index_seconds = time.perf_counter() - start
        logger.info("generative %s index of %d documents built in %.1f s", self.scheme, len(docs), self.index_seconds)

    # -- searching ------------------------------------------------------------------------------------
    def constraint(self) -> Any:
        eos = self.model.tokenizer.eos_token_id
        structure = self.structure
        if isinstance(structure, NgramIndex):
            def allowed(prefix: Sequence[int]) -> list[int]:
                nxt = list(structure.next_tokens(prefix))
                return nxt + [eos] if prefix else nxt
        else:
            assert structure is not None

            def allowed(prefix: Sequence[int]) -> list[int]:
                nxt = list(structure.next_tokens(prefix))
                return nxt + [eos] if structure.is_identifier(prefix) else nxt
        return allowed

    def is_valid(self, tokens: Sequence[int]) -> bool:
        if isinstance(self.structure, NgramIndex):
            return self.structure.count(tokens) > 0
        return self.structure is not None and self.structure.is_identifier(tokens)

    def search(self, queries: Mapping[str, str], k: int = 10) -> Run:
        """``{qid: {doc_id: score}}``; an empty query gets no hits (logged)."""
        if self.structure is None:
            raise RuntimeError("the index is empty: call index(corpus) or load(path) first")
        empty = [q for q in queries if not queries[q].strip()]
        if empty:
            logger.warning("%d empty queries get no hits (first: %r)", len(empty), empty[0])
        qids = [q for q in queries if queries[q].strip()]
        run: Run = {q: {} for q in empty}
        constraint = self.constraint() if self.constrained else None
        max_new = self.model.settings.max_new_tokens if self.scheme == "ngram" else self._max_title_tokens + 1
        bar = tqdm(total=len(qids), desc="generative search", unit="query",
                   disable=not logger.isEnabledFor(logging.INFO))
        for s in range(0, len(qids), self.batch_size):
            batch = qids[s : s + self.batch_size]
            hyps = self.model.generate([queries[q] for q in batch], task=self.task, constraint=constraint,
                                       num_beams=self.num_beams, max_new_tokens=max_new)
            for qid, h in zip(batch, hyps, strict=True):
                self._count_valid(h)
                run[qid] = self.rank(self.key_set(queries[qid], h), k)
            bar.update(len(batch))
        bar.close()
        return {q: run[q] for q in queries}

    def _count_valid(self, hypotheses: Sequence[Any]) -> None:
        self.stats["generated"] += len(hypotheses)
        self.stats["valid"] += sum(1 for h in hypotheses if h.tokens and self.is_valid(h.tokens))

    def key_set(self, query: str, hypotheses: Sequence[Any]) -> KeySet:
        """The candidates one query's documents are scored from, by source (titles: the beams only)."""
        if not isinstance(self.structure, NgramIndex):
            return KeySet({tuple(h.tokens): h.score for h in hypotheses})
        if self.keys == ("beams",):
            return KeySet(candidate_ngrams(hypotheses))
        extra = (query_keys(query, self.model.tokenizer, self.structure, self.query_words)
                 if "query" in self.keys else [])
        first, scores = self.model.score_keys(query, extra, task=self.task)
        return KeySet(candidate_ngrams(hypotheses), dict(zip(extra, scores, strict=True)),
                      first.cpu().numpy() if "unigrams" in self.keys else None)

    def rank(self, keys: KeySet, k: int, sources: Sequence[str] | None = None) -> dict[str, float]:
        """The top ``k`` documents (``{doc id: score}``) from the ``sources`` of one query's :class:`KeySet`
        (default: this index's keys; another choice, beams left out too, is for ablations)."""
        sources = self.keys if sources is None else tuple(sources)
        ngrams = keys.ngrams(sources)
        scores: dict[int, float] = {}
        if isinstance(self.structure, NgramIndex):
            weights: dict[tuple[int, ...], float] | None = None
            if keys.first is not None and "unigrams" in sources:
                w = unigram_weights(keys.first, self.structure.unigram_counts(), self.structure.num_tokens,
                                    self.smoothing)
                top = np.argsort(-w, kind="stable")[: len(ngrams)]
                weights = {(int(t),): float(w[t]) for t in top if w[t] > 0.0}
            scores = ngram_document_scores(ngrams, self.structure, alpha=self.alpha, smoothing=self.smoothing,
                                           beta=self.beta, tf_k1=self.tf_k1, weights=weights)
            if self.length_norm > 0.0:
                if self._relative_lengths is None:
                    self._relative_lengths = relative_lengths(self.structure)
                scores = length_normalised(scores, self._relative_lengths, self.length_norm)
        else:
            assert self.structure is not None
            for tokens, score in ngrams.items():
                for row in self.structure.owners(tokens):
                    scores[row] = max(scores.get(row, -math.inf), score)
        best = sorted(scores.items(), key=lambda x: (-x[1], self._ids[x[0]]))[:k]
        return {self._ids[row]: float(score) for row, score in best}

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        if self.structure is None:
            raise RuntimeError("nothing to save: call index(corpus) first")
        path = Path(path)
        with atomic_directory(path) as tmp:
            self.structure.save(tmp)
            (tmp / IDS_FILE).write_text(json.dumps(self._ids), encoding="utf-8")
            DocStore.persist(tmp, self._corpus, self._source_dir)
            identity = self.model.identity
            write_manifest(tmp, self.kind, len(self._ids), encoder=identity,
                           settings={"scheme": self.scheme, "tokenizer": self.model.tokenizer_identity,
                                     "num_beams": self.num_beams, "batch_size": self.batch_size,
                                     "keys": list(self.keys), **self.search_options,
                                     "task": self.task, "constrained": self.constrained,
                                     "max_doc_tokens": self.max_doc_tokens,
                                     "max_title_tokens": self._max_title_tokens,
                                     "num_identifiers": len(self.structure) if self.scheme == "title" else None,
                                     "num_tokens": getattr(self.structure, "num_tokens", None)},
                           corpus=corpus_identity(self._corpus, self._source_manifest))
        logger.info("saved the generative index to %s", path)
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: Any = None, *, device: str | None = "auto") -> GenerativeIndex:
        """Load a saved index; without ``encoder`` the model the manifest names is loaded. A model with
        another tokenizer or identifier scheme is refused."""
        path = Path(path)
        manifest = read_manifest(path, expected_kind=cls.kind)
        settings = manifest.get("settings") or {}
        built = manifest.get("encoder") or {}
        if encoder is None:
            from uniret.retriever.generative import GenerativeRetriever

            source = built.get("path") if built.get("path") and Path(built["path"]).exists() else built.get("name")
            if not source:
                raise IndexMismatchError(f"{path}: the manifest names no model; pass one")
            encoder = GenerativeRetriever.load(source, device=device or "auto")
        want = settings.get("tokenizer") or {}
        have = encoder.tokenizer_identity
        if want.get("hash") != have.get("hash"):
            raise IndexMismatchError(f"{path}: identifiers were built with tokenizer {want.get('name')!r} "
                                     f"(vocabulary {want.get('vocab_size')}, hash {want.get('hash')}), the given "
                                     f"model {encoder.name!r} has {have.get('name')!r} (vocabulary "
                                     f"{have.get('vocab_size')}, hash {have.get('hash')}); re-index with this model")
        if settings.get("scheme") != encoder.settings.scheme:
            raise IndexMismatchError(f"{path}: a {settings.get('scheme')!r} identifier index, but the model was "
                                     f"trained for {encoder.settings.scheme!r} identifiers")
        task = settings.get("task")  # a model given in place of the saved one may not have the saved task
        self = cls(encoder, num_beams=settings.get("num_beams", 10), batch_size=settings.get("batch_size", 8),
                   task=task if task in encoder.settings.tasks else None,
                   constrained=settings.get("constrained", True), max_doc_tokens=settings.get("max_doc_tokens"),
                   keys=settings.get("keys"),  # a saved index keeps its own ranking (defaults where it predates one)
                   **{name: settings.get(name, default) for name, default in SEARCH_OPTIONS.items()})
        try:
            ids = json.loads((path / IDS_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexMismatchError(f"{path / IDS_FILE}: missing or corrupt ({e}); expected a JSON list of "
                                     "document ids") from None
        if self.scheme == "ngram":
            self.structure = NgramIndex.load(path)
            n_docs = len(self.structure)
        else:
            self.structure = TitleTrie.load(path)
            n_docs = len(ids)
        if len(ids) != manifest["num_docs"] or n_docs != len(ids):
            raise IndexMismatchError(f"{path}: {len(ids)} ids and {n_docs} indexed documents, the manifest says "
                                     f"{manifest['num_docs']}; the index is damaged")
        self._ids = ids
        self._max_title_tokens = int(settings.get("max_title_tokens") or 0)
        self._source_dir, self._source_manifest = path, manifest
        return self


    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "scheme": self.scheme, "num_beams": self.num_beams, "keys": list(self.keys),
                **self.search_options, "constrained": self.constrained,
                "num_docs": len(self._ids), "encoder": self.model.identity, "valid_outputs": dict(self.stats)}



def model_from_config(cfg: Any) -> Any:
    """The generative retriever a ``RetrieverConfig`` names (``uniret eval --retriever generative --model M``)."""
    from uniret.retriever.generative import GenerativeRetriever

    return GenerativeRetriever.load(cfg.model, device=cfg.device)


def parse_search_options(text: str) -> dict[str, float]:
    """``"length_norm=0.5,alpha=1"`` -> ``{"length_norm": 0.5, "alpha": 1.0}`` (checked by the index)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        name, eq, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not part or not eq or not name.strip() or not math.isfinite(number):
            raise ValueError(f"--search-options {text!r}: expected NAME=NUMBER, comma-separated (e.g. "
                             f"length_norm=0.5,alpha=1); got {part!r}")
        if name.strip() in out:
            raise ValueError(f"--search-options {text!r}: {name.strip()} is given twice")
        out[name.strip()] = number
    return out


def build(cfg: Any, *, scratch: Path | None = None) -> GenerativeIndex:
    """A fresh, empty generative index over the model a ``RetrieverConfig`` names."""
    keys = [k.strip() for k in cfg.keys.split(",") if k.strip()] if cfg.keys else None
    options = parse_search_options(cfg.search_options) if cfg.search_options else {}
    check_search_options(options, "--search-options")  # before the model loads
    return GenerativeIndex(model_from_config(cfg), batch_size=cfg.batch_size, keys=keys, **options)  # type: ignore[arg-type]

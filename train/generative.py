"""Training the generative retriever with the one trainer (UGR-style multi-task prompt learning).

Each batch of training records (query -> relevant documents, from the train qrels) becomes a multi-task
batch of (input text, task, target identifier) examples:

- **retrieval** pairs: the query -> an identifier of one of its relevant documents (n-gram scheme: of
  ``ngram_candidates`` random spans of ``ngram_length`` tokens, the one sharing most tokens with the query,
  as SEAL picks spans; title scheme: the title);
- **identifier granularities** (``query_tasks``, UGR's prompt learning over one corpus): each task named there
  gets its own retrieval pair per record, its target n-gram cut from its source: ``text`` (anywhere in the
  document, as above) or ``title`` (within the title's tokens, the document-level name of the document), so
  one model with one soft prompt per task serves both and search picks the task;
- **indexing** pairs (``indexing_per_record`` per record, documents drawn from the whole corpus, so documents
  no query judges are learned too): a chunk of ``chunk_tokens`` tokens of the document -> an identifier of it;
- optional **pseudo-queries** (``pseudo_queries``: ``first-sentence`` or ``span``): a text cut from a random
  document, as a retrieval query -> an identifier of that document.

Each example carries its task's soft prompt; the loss is cross-entropy on the identifier tokens and the EOS
that ends them (:meth:`uniret.retriever.generative.GenerativeRetriever.loss`). Targets are cut from the very
token ids the index is built from (:func:`uniret.retriever.generative.document_tokens`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uniret.retriever.generative import check_search_options
from uniret.train.precision import autocast_forward
from uniret.train.records import TrainingRecord

PSEUDO_QUERIES = ("none", "first-sentence", "span")
TARGET_SOURCES = ("text", "title")


@dataclass
class GenerativeConfig:
    """The ``generative:`` section of a training recipe (model settings and training pairs)."""

    scheme: str = "ngram"  # ngram | title
    tasks: list[str] = field(default_factory=lambda: ["retrieval", "indexing"])  # a soft prompt each
    prompt_length: int = 8  # soft-prompt vectors per task (0: none)
    template: str = "{text}\n=>"
    max_new_tokens: int = 10  # longest n-gram decoded at search time
    search_keys: list[str] = field(default_factory=lambda: ["beams"])  # saved with the model: its keys at search
    search_options: dict[str, float] = field(default_factory=dict)  # saved with the model: how keys rank documents
    ngram_length: int = 8  # tokens of a training target n-gram
    ngram_candidates: int = 8  # retrieval targets: best of this many random spans by overlap with the query
    chunk_tokens: int = 48  # indexing inputs: a span of this many document tokens
    indexing_per_record: int = 1
    pseudo_queries: str = "none"  # none | first-sentence | span
    max_doc_tokens: int | None = None  # cut documents (targets are taken from their first tokens only)
    # {task: text | title}: tasks whose input is the training query, each with its own target n-grams (empty:
    # one retrieval pair per record, under the record's task when the model has it)
    query_tasks: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.search_keys, (list, tuple)):
            raise ValueError(f"generative.search_keys must be a list, e.g. [beams, query]; got {self.search_keys!r}")
        check_search_options(self.search_options, "generative.search_options", self.scheme)
        if self.pseudo_queries not in PSEUDO_QUERIES:
            raise ValueError(f"generative.pseudo_queries must be one of {', '.join(PSEUDO_QUERIES)}, got "
                             f"{self.pseudo_queries!r}")
        if self.indexing_per_record > 0 and "indexing" not in self.tasks:
            raise ValueError("generative.indexing_per_record > 0 needs an 'indexing' task in generative.tasks")
        for task, source in self.query_tasks.items():
            if task not in self.tasks:
                raise ValueError(f"generative.query_tasks names task {task!r}, which is not in generative.tasks "
                                 f"({', '.join(self.tasks)})")
            if source not in TARGET_SOURCES:
                raise ValueError(f"generative.query_tasks.{task} must be one of {', '.join(TARGET_SOURCES)}, got "
                                 f"{source!r}")
            if source == "title" and self.scheme != "ngram":
                raise ValueError(f"generative.query_tasks.{task}: 'title' n-grams need scheme 'ngram' (the title "
                                 "scheme's identifiers are whole titles already)")
        for name in ("ngram_length", "ngram_candidates", "chunk_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"generative.{name} must be a positive integer, got {getattr(self, name)!r}")


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class GenerativeModule:
    """The trainer's :class:`~uniret.train.trainer.TrainingModule` for a generative retriever over ``corpus``."""

    def __init__(self, model: Any, cfg: GenerativeConfig, corpus: Any) -> None:
        from uniret.retriever.generative import document_tokens

        self.model = model
        self.cfg = cfg
        self.docs = list(corpus)
        self.rows = {d.id: i for i, d in enumerate(self.docs)}
        tok = model.tokenizer
        self.tokens = document_tokens(tok, [d.full_text() for d in self.docs], cfg.max_doc_tokens)
        self.titles = document_tokens(tok, [d.title for d in self.docs]) if cfg.scheme == "title" else None
        self.title_length: list[int] = []  # per document, how many of its leading tokens are its title's
        if "title" in cfg.query_tasks.values():
            for toks, title in zip(self.tokens, document_tokens(tok, [d.title for d in self.docs]), strict=True):
                n = 0
                while n < min(len(toks), len(title)) and toks[n] == title[n]:
                    n += 1
                self.title_length.append(n)
        self._loss = model.loss

    # -- the trainer's API ----------------------------------------------------------------------------
    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def use_mixed_precision(self, mode: str) -> None:
        wrapped = autocast_forward(lambda args: self.model.loss(*args), mode, self.model.device)
        self._loss = lambda *args: wrapped(args)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Any:
        result = self.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"the checkpoint holds weights this model lacks: {result.unexpected_keys[:5]}")
        return result

    def save(self, path: Path) -> Any:
        return self.model.save(path)

    def step(self, records: Sequence[TrainingRecord], rng: random.Random, step: int) -> dict[str, float]:
        examples = self.examples(records, rng)
        texts, tasks, targets = zip(*examples, strict=True)
        loss = self._loss(list(texts), list(tasks), list(targets))
        loss.backward()
        logs = {"loss": float(loss.detach()), "examples": float(len(examples))}
        for task in self.model.settings.tasks:
            logs[f"{task}_examples"] = float(sum(1 for t in tasks if t == task))
        return logs

    # -- training pairs ---------------------------------------------------------------------------------
    def identifier(self, row: int, rng: random.Random, query: str | None = None, source: str = "text") -> list[int]:
        """A target identifier of document ``row`` (for a query: the candidate span sharing most of its tokens),
        cut from the whole document (``source="text"``) or from its title's tokens (``"title"``; a document
        without a title falls back to its text)."""
        if self.titles is not None:
            return self.titles[row]
        toks, n = self.tokens[row], self.cfg.ngram_length
        if source == "title" and self.title_length[row]:
            toks = toks[: self.title_length[row]]
        if len(toks) <= n:
            return list(toks)
        tries = self.cfg.ngram_candidates if query else 1
        starts = [rng.randrange(len(toks) - n + 1) for _ in range(tries)]
        if query:
            words = set(self.model.tokenizer(query, add_special_tokens=False)["input_ids"])
            starts.sort(key=lambda s: -len(words & set(toks[s : s + n])))  # stable: ties keep the draw order
        return list(toks[starts[0] : starts[0] + n])

    def chunk(self, row: int, rng: random.Random) -> str:
        toks, n = self.tokens[row], self.cfg.chunk_tokens
        start = rng.randrange(max(1, len(toks) - n + 1))
        return str(self.model.tokenizer.decode(toks[start : start + n])).strip()

    def pseudo_query(self, row: int, rng: random.Random) -> str:
        if self.cfg.pseudo_queries == "first-sentence":
            text = self.docs[row].text.strip()
            return _SENTENCE.split(text, maxsplit=1)[0] if text else self.docs[row].title
        toks = self.tokens[row]
        n = min(16, len(toks))
        start = rng.randrange(max(1, len(toks) - n + 1))
        return str(self.model.tokenizer.decode(toks[start : start + n])).strip()

    def _usable(self, row: int) -> bool:
        return bool(self.titles[row] if self.titles is not None else self.tokens[row])

    def examples(self, records: Sequence[TrainingRecord], rng: random.Random) -> list[tuple[str, str, list[int]]]:
        """The (input text, task, target identifier) examples of one batch of records."""
        tasks = self.model.settings.tasks
        retrieval = self.model.settings.query_task
        out: list[tuple[str, str, list[int]]] = []
        for r in records:
            rows = [self.rows[d] for d in (r.positive_ids or []) if d in self.rows and self._usable(self.rows[d])]
            if not rows:
                raise ValueError(f"training record {r.query_id or r.query[:40]!r}: none of its positive_ids "
                                 "is a document of the corpus (generative training needs positive_ids)")
            if self.cfg.query_tasks:
                for task, source in self.cfg.query_tasks.items():
                    out.append((r.query, task, self.identifier(rng.choice(rows), rng, r.query, source)))
            else:
                task = r.task if r.task in tasks else retrieval
                out.append((r.query, task, self.identifier(rng.choice(rows), rng, r.query)))
            for _ in range(self.cfg.indexing_per_record):
                row = self._random_row(rng)
                out.append((self.chunk(row, rng), "indexing", self.identifier(row, rng)))
            if self.cfg.pseudo_queries != "none":
                row = self._random_row(rng)
                q = self.pseudo_query(row, rng)
                out.append((q, retrieval, self.identifier(row, rng, q)))
        return out

    def _random_row(self, rng: random.Random) -> int:
        for _ in range(100):
            row = rng.randrange(len(self.docs))
            if self._usable(row):
                return row
        raise ValueError("the corpus has (almost) no documents with identifiers of this scheme")

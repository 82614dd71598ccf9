"""Query-side prompts for instruction-following embedders: a task instruction per query, formatted by a
template, optionally preceded by in-context examples (query, positive document), as in LG-ANNA-Embedding
and bge-en-icl. Documents are always encoded without instructions.

With the defaults, a SciFact query with one example reads::

    Instruct: Given a scientific claim, retrieve documents that support or refute the claim
    Query: <example claim>
    Response: <example abstract>

    Instruct: Given a scientific claim, retrieve documents that support or refute the claim
    Query: <claim>
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery: {query}"
DEFAULT_ICL_RESPONSE = "\nResponse: {positive}"
DEFAULT_ICL_SEPARATOR = "\n\n"


def _check_template(template: str, required: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    import string

    names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    missing = [r for r in required if r not in names]
    unknown = sorted(names - set(allowed))
    if missing or unknown:
        raise ValueError(f"invalid template {template!r}: "
                         + (f"missing {', '.join('{' + m + '}' for m in missing)}" if missing else "")
                         + ("; " if missing and unknown else "")
                         + (f"unknown fields {', '.join('{' + u + '}' for u in unknown)}" if unknown else "")
                         + f" (fields: {', '.join('{' + a + '}' for a in allowed)})")


@dataclass
class QueryPrompts:
    """How queries are turned into model inputs.

    ``instructions`` maps task names to instructions; a query's instruction is the one given explicitly,
    else its task's, else ``default_instruction``. A query without any instruction is encoded as it is.
    ``query_template`` needs ``{query}`` and may use ``{instruction}``: ``"query: {query}"`` with
    ``default_instruction=""`` gives E5-style prefixes. ``icl_examples`` are (query, positive) pairs
    placed before every instructed query, each formatted as the query template plus ``icl_response``.
    """

    instructions: dict[str, str] = field(default_factory=dict)
    default_instruction: str | None = None
    query_template: str = DEFAULT_QUERY_TEMPLATE
    icl_examples: list[tuple[str, str]] = field(default_factory=list)
    icl_response: str = DEFAULT_ICL_RESPONSE
    icl_separator: str = DEFAULT_ICL_SEPARATOR

    def __post_init__(self) -> None:
        self.instructions = dict(self.instructions or {})
        self.icl_examples = [(str(q), str(p)) for q, p in (self.icl_examples or [])]
        _check_template(self.query_template, ("query",), ("instruction", "query"))
        _check_template(self.icl_response, ("positive",), ("positive",))
        self._warned: set[str] = set()

    # -- resolving the instruction -----------------------------------------------------------------
    def instruction_for(self, task: str | None = None, instruction: str | None = None) -> str | None:
        if instruction is not None:
            return instruction
        if task is not None and (self.instructions or self.default_instruction is not None):
            # a task matters only to a model that has instructions; without any, queries stay plain
            if task in self.instructions:
                return self.instructions[task]
            if self.default_instruction is None:
                known = ", ".join(sorted(self.instructions)) or "none"
                raise KeyError(f"no instruction for task {task!r} (tasks with instructions: {known}) and no "
                               "default_instruction; add it to instructions= or set default_instruction")
            if task not in self._warned:
                self._warned.add(task)
                logger.warning("no instruction for task %r: using the default instruction", task)
        return self.default_instruction

    # -- formatting ----------------------------------------------------------------------------------
    def prefix(self, instruction: str | None) -> str | None:
        """The text placed before the query for ``instruction`` (examples included), or None when the
        template puts text after ``{query}`` and so is not a plain prefix."""
        if instruction is None:
            return ""
        marker = "\0QUERY\0"
        text = self._format(marker, instruction)
        head, sep, tail = text.partition(marker)
        return head if sep and not tail else None

    def _format(self, query: str, instruction: str) -> str:
        parts = [self.query_template.format(instruction=instruction, query=q) + self.icl_response.format(positive=p)
                 for q, p in self.icl_examples]
        parts.append(self.query_template.format(instruction=instruction, query=query))
        return self.icl_separator.join(parts)

    def format(self, queries: Sequence[str], tasks: Sequence[str | None] | None = None,
               instructions: Sequence[str | None] | None = None) -> list[str]:
        """Model inputs for ``queries``; ``tasks`` and ``instructions`` are per query (None entries fall back)."""
        n = len(queries)
        for name, values in (("tasks", tasks), ("instructions", instructions)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} queries")
        out = []
        for i, q in enumerate(queries):
            inst = self.instruction_for(tasks[i] if tasks is not None else None,
                                        instructions[i] if instructions is not None else None)
            out.append(q if inst is None else self._format(q, inst))
        return out

    def sentence_transformers_prompts(self) -> dict[str, str]:
        """Prompts for ``config_sentence_transformers.json``: ``query`` (the default instruction) and one per
        task, where the template is a plain prefix; ``document`` is empty."""
        prompts = {"document": ""}
        candidates: dict[str, str | None] = {"query": self.default_instruction}
        candidates.update({t: i for t, i in self.instructions.items() if t not in ("query", "document")})
        for name, inst in candidates.items():
            if inst is None:
                continue
            prefix = self.prefix(inst)
            if prefix is None:
                logger.warning("query template %r is not a prefix: sentence-transformers prompts are not written; "
                               "load with uniret to get the full template", self.query_template)
                return {"document": ""}
            prompts[name] = prefix
        return prompts

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "instructions": dict(self.instructions),
            "default_instruction": self.default_instruction,
            "query_template": self.query_template,
            "icl_examples": [list(e) for e in self.icl_examples],
            "icl_response": self.icl_response,
            "icl_separator": self.icl_separator,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryPrompts:
        return cls(
            instructions=dict(data.get("instructions") or {}),
            default_instruction=data.get("default_instruction"),
            query_template=data.get("query_template", DEFAULT_QUERY_TEMPLATE),
            icl_examples=[(q, p) for q, p in data.get("icl_examples") or []],
            icl_response=data.get("icl_response", DEFAULT_ICL_RESPONSE),
            icl_separator=data.get("icl_separator", DEFAULT_ICL_SEPARATOR),
        )

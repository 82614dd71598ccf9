"""The generative retriever's model: a decoder-only LM that maps a text straight to document identifiers.

Composition (UGR, "A Unified Generative Retriever for Knowledge-Intensive Language Tasks via Prompt
Learning"; SEAL and GENRE for the identifiers):

    [soft prompt of the task (learned, optional)] + tokens(template.format(text=...)) -> identifier tokens, EOS

- One learned soft prompt per task (``settings.tasks``, e.g. ``retrieval`` and ``indexing``, or two
  granularities of one corpus) is prepended to the input embeddings; one model serves every task.
- Training (:meth:`GenerativeRetriever.loss`) is cross-entropy on the identifier tokens (and the EOS after
  them) only.
- Decoding (:meth:`GenerativeRetriever.generate`) is ``transformers``' beam search with a
  ``prefix_allowed_tokens_fn`` built from an identifier structure (:mod:`uniret.retriever.identifiers`), so
  every returned sequence is a real identifier; the returned score is the LM's log-probability of it.

Saved folders hold the HF model (LoRA merged) and tokenizer, ``soft_prompts.safetensors`` and
``uniret_generative.json`` (settings and history; the model type is recorded, never inferred from a name).
Encoder-decoder (seq2seq) backbones are not supported yet: none loads offline here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from uniret.assets import content_hash, resolve_model
from uniret.runtime import resolve_device

logger = logging.getLogger(__name__)

CONFIG_FILE = "uniret_generative.json"
PROMPTS_FILE = "soft_prompts.safetensors"
FORMAT_VERSION = 1
SCHEMES = ("ngram", "title")
KEY_SOURCES = ("beams", "query", "unigrams")
"""Where a query's n-gram keys come from at search time (SEAL): ``beams``, the decoded identifiers and their
prefixes; ``query``, the query's own word n-grams found in the corpus, scored by the LM
(:meth:`GenerativeRetriever.score_keys`); ``unigrams``, the tokens the LM's first decoding step weighs highest,
as many as the other keys (fewer when some already are keys). ``beams`` is always one of them."""


def check_search_keys(keys: Any, scheme: str, what: str) -> tuple[str, ...]:
    """``keys`` as a tuple of :data:`KEY_SOURCES` with ``beams`` among them (titles: ``beams`` only), or a
    ``ValueError`` naming ``what``."""
    if not isinstance(keys, (list, tuple)):
        raise ValueError(f"{what} must be a list, e.g. ['beams', 'query']; got {keys!r}")
    if "beams" not in keys or not set(keys) <= set(KEY_SOURCES):
        raise ValueError(f"{what} must include 'beams' and come from {', '.join(KEY_SOURCES)}; got {list(keys)!r}")
    if scheme == "title" and list(keys) != ["beams"]:
        raise ValueError(f"{what} {list(keys)!r}: sources other than 'beams' need the n-gram scheme (a title is "
                         "ranked from the beams that name it)")
    return tuple(keys)


SEARCH_OPTIONS: dict[str, float] = {"alpha": 2.0, "smoothing": 0.0, "beta": 1.0, "query_words": 3, "length_norm": 0.0,
                                     "tf_k1": 0.0}
"""How documents are ranked from the n-gram keys (n-gram scheme), and their defaults (SEAL's ranking without
smoothing): ``alpha``, the exponent of each key's weight; ``smoothing`` of the corpus probability and
``beta``, SEAL's repetition coefficient; ``query_words``, the longest query key in words; ``length_norm``, ``b``
of ``score / (1 - b + b * length / mean length)`` (0: no length normalisation, as SEAL); ``tf_k1``, BM25's ``k1``
over a key's occurrences in a document, each key's share times ``tf (k1 + 1) / (tf + k1)`` (0: presence only, as
SEAL)."""


def check_search_options(options: Any, what: str, scheme: str = "ngram") -> dict[str, float]:
    """Every :data:`SEARCH_OPTIONS` with ``options`` (a mapping of some of them) over the defaults, checked
    (``query_words`` an int, the rest floats), or a ``ValueError`` naming ``what`` and the option (titles: the
    defaults only, as a title is ranked by the best beam that names it)."""
    if not isinstance(options, dict):
        raise ValueError(f"{what} must be a mapping, e.g. {{length_norm: 0.5}}; got {options!r}")
    if unknown := set(options) - set(SEARCH_OPTIONS):
        raise ValueError(f"{what}: unknown option(s) {sorted(unknown)}; expected some of {', '.join(SEARCH_OPTIONS)}")
    ranges = {"alpha": (0.0, math.inf, "a number > 0"), "smoothing": (0.0, math.inf, "a number >= 0"),
              "beta": (0.0, 1.0, "a number in [0, 1]"), "query_words": (1.0, math.inf, "a positive integer"),
              "length_norm": (0.0, 1.0, "a number in [0, 1]"), "tf_k1": (0.0, math.inf, "a number >= 0")}
    out: dict[str, float] = {}
    for name, default in SEARCH_OPTIONS.items():
        value = options.get(name, default)
        lo, hi, says = ranges[name]
        try:
            number = float(value) if not isinstance(value, (bool, str)) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        ok = math.isfinite(number) and lo <= number <= hi and (number > 0 if name == "alpha" else True)
        if name == "query_words":
            ok = ok and number == int(number)
        if not ok:
            raise ValueError(f"{what}: {name} must be {says}, got {value!r}")
        out[name] = int(number) if name == "query_words" else number
    if scheme == "title" and out != SEARCH_OPTIONS:
        raise ValueError(f"{what} {dict(options)!r}: these options rank documents from n-gram keys; the title scheme "
                         "ranks a title by the best beam that names it")
    return out


Constraint = Callable[[Sequence[int]], Sequence[int]]  # generated prefix -> allowed next tokens (EOS included)


class Hypothesis(NamedTuple):
    tokens: list[int]  # the identifier, EOS stripped
    score: float  # log-probability of the identifier followed by EOS (the LM's, before constraints)
    token_scores: list[float]  # log-probability of each token given the ones before it


@dataclass
class GenerativeSettings:
    """Everything besides the weights that decides what the model generates (``uniret_generative.json``)."""

    scheme: str = "ngram"  # identifier scheme: ngram (any n-gram of a document) | title
    tasks: list[str] = field(default_factory=lambda: ["retrieval", "indexing"])  # one soft prompt each
    prompt_length: int = 0  # soft-prompt vectors per task; 0: no soft prompts
    template: str = "{text}\n=>"  # the input text around the query or document chunk
    max_length: int = 64  # input tokens (after the template)
    max_new_tokens: int = 10  # longest identifier generated (n-gram scheme; titles use their longest)
    search_keys: list[str] = field(default_factory=lambda: ["beams"])  # n-gram scheme: KEY_SOURCES searched
    search_options: dict[str, float] = field(default_factory=dict)  # SEARCH_OPTIONS other than their defaults

    @property
    def query_task(self) -> str:
        """The task whose prompt a query is decoded under unless one is named: ``retrieval``, or the first task."""
        return "retrieval" if "retrieval" in self.tasks else self.tasks[0]

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"generative scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"generative tasks must be a non-empty list of distinct names, got {self.tasks!r}")
        if "{text}" not in self.template:
            raise ValueError(f"generative template must contain '{{text}}', got {self.template!r}")
        for name in ("max_length", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"generative {name} must be a positive integer, got {getattr(self, name)!r}")
        check_search_keys(self.search_keys, self.scheme, "generative search_keys")
        full = check_search_options(self.search_options, "generative search_options", self.scheme)
        self.search_options = {k: full[k] for k in self.search_options}  # query_words an int, the rest floats
        if self.prompt_length < 0:
            raise ValueError(f"generative prompt_length must be >= 0, got {self.prompt_length!r}")


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """What an identifier index depends on: the tokenizer's vocabulary (hashed), its EOS and its name."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha256(json.dumps([vocab, tokenizer.eos_token_id], ensure_ascii=False).encode()).hexdigest()
    return {"name": getattr(tokenizer, "name_or_path", ""), "vocab_size": len(vocab), "hash": digest[:16],
            "eos_token_id": tokenizer.eos_token_id}


def document_tokens(tokenizer: Any, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
    """Token ids of whole texts (no special tokens), cut at ``max_tokens``; training cuts its target
    identifiers from exactly these."""
    out = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [list(ids[:max_tokens]) if max_tokens else list(ids) for ids in out]


class GenerativeRetriever(torch.nn.Module):
    """A decoder-only LM with per-task soft prompts; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, settings: GenerativeSettings, *, name: str,
                 path: str | None = None, history: dict[str, Any] | None = None) -> None:
        super().__init__()
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(f"{name}: encoder-decoder backbones are not supported yet; use a decoder-only LM")
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{name}: the tokenizer has no EOS token; identifiers need one to end")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.settings = settings
        self.name = name
        self.path = path
        self.history = dict(history or {})
        self._hash: str | None = None
        self._tokenizer_identity: dict[str, Any] | None = None
        self._cache_kw: str | None = None
        self.soft_prompts: torch.nn.Parameter | None = None
        if settings.prompt_length > 0:
            emb = model.get_input_embeddings().weight
            g = torch.Generator().manual_seed(0)  # initialised from real token embeddings (prompt tuning)
            rows = torch.randint(0, emb.shape[0], (len(settings.tasks) * settings.prompt_length,), generator=g)
            init = emb.detach()[rows.to(emb.device)].reshape(len(settings.tasks), settings.prompt_length, -1)
            self.soft_prompts = torch.nn.Parameter(init.clone().float())

    # -- building, loading, saving ----------------------------------------------------------------
    @classmethod
    def build(cls, backbone: str, settings: GenerativeSettings | None = None, *, lora: dict[str, Any] | None = None,
              device: str = "auto", dtype: str | torch.dtype = "auto") -> GenerativeRetriever:
        """A fresh retriever on a causal LM (alias from :mod:`uniret.assets`, folder or hub name)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from uniret.retriever.embedder import resolve_dtype

        path = resolve_model(backbone)
        device = resolve_device(device)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device)).to(device)  # type: ignore[arg-type]
        tokenizer = AutoTokenizer.from_pretrained(path)
        self = cls(model, tokenizer, settings or GenerativeSettings(), name=str(backbone),
                   path=path if Path(path).is_dir() else None, history={"source": str(backbone)})
        self.to(device)
        if lora is not None:
            self.add_lora(lora)
        return self

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", dtype: str | torch.dtype = "auto",
             settings: GenerativeSettings | None = None) -> GenerativeRetriever:
        """A folder saved by :meth:`save`; a plain causal LM (no ``uniret_generative.json``) gets ``settings``
        or the defaults."""
        from safetensors.torch import load_file

        folder = Path(resolve_model(path))
        cfg_file = folder / CONFIG_FILE
        if not cfg_file.is_file():
            return cls.build(str(path), settings, device=device, dtype=dtype)
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        if cfg.get("format") != FORMAT_VERSION:
            raise ValueError(f"{cfg_file}: format {cfg.get('format')!r} is not supported (expected {FORMAT_VERSION})")
        try:
            saved = GenerativeSettings(**cfg["settings"])
        except TypeError as e:
            raise ValueError(f"{cfg_file}: field 'settings' is invalid ({e})") from None
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from uniret.retriever.embedder import resolve_dtype

        device = resolve_device(device)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype, device)).to(device)  # type: ignore[arg-type]
        if model.config.model_type != cfg.get("model_type"):
            raise ValueError(f"{cfg_file}: records model type {cfg.get('model_type')!r}, config.json holds "
                             f"{model.config.model_type!r}; the folder is inconsistent")
        self = cls(model, AutoTokenizer.from_pretrained(folder), saved, name=str(path), path=str(folder),
                   history=cfg.get("history"))
        if self.soft_prompts is not None:
            prompts = load_file(str(folder / PROMPTS_FILE))["soft_prompts"]
            if prompts.shape != self.soft_prompts.shape:
                raise ValueError(f"{folder / PROMPTS_FILE}: soft prompts of shape {tuple(prompts.shape)}, the "
                                 f"settings need {tuple(self.soft_prompts.shape)}")
            self.soft_prompts.data.copy_(prompts)
        return self.to(device)

    def add_lora(self, lora: dict[str, Any]) -> None:
        """Wrap the LM with LoRA adapters (``{}``: r=8, alpha=16 on q/k/v/o); only they (and the soft
        prompts) stay trainable."""
        from peft import get_peft_model

        from uniret.retriever.embedder import _lora_config

        self.model = get_peft_model(self.model, _lora_config(lora, "decoder"))
        self.history["lora"] = {k: v for k, v in lora.items()}

    def _plain_model(self) -> tuple[Any, dict[str, torch.Tensor] | None]:
        if hasattr(self.model, "peft_config"):
            from uniret.retriever.embedder import _merged_state_dict

            return self.model.get_base_model(), _merged_state_dict(self.model)
        return self.model, None

    def save(self, path: str | Path) -> Path:
        """HF model (LoRA merged) + tokenizer + soft prompts + ``uniret_generative.json``, atomically."""
        from safetensors.torch import save_file

        from uniret.atomic import atomic_directory

        path = Path(path)
        model, state = self._plain_model()
        with atomic_directory(path, kind="model") as tmp:
            model.save_pretrained(tmp, state_dict=state)
            self.tokenizer.save_pretrained(tmp)
            if self.soft_prompts is not None:
                save_file({"soft_prompts": self.soft_prompts.detach().cpu().contiguous()}, str(tmp / PROMPTS_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps({
                "format": FORMAT_VERSION, "type": "generative", "model_type": model.config.model_type,
                "settings": asdict(self.settings), "history": self.history}, indent=2) + "\n", encoding="utf-8")
        self.path, self._hash = str(path), None
        logger.info("saved the generative retriever to %s", path)
        return path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def tokenizer_identity(self) -> dict[str, Any]:
        if self._tokenizer_identity is None:
            self._tokenizer_identity = tokenizer_identity(self.tokenizer)
        return self._tokenizer_identity

    @property
    def identity(self) -> dict[str, Any]:
        """Name, path, weights hash, the tokenizer (an identifier index is only valid for it) and settings."""
        if self._hash is None:
            self._hash = content_hash(self.path) if self.path and Path(self.path).is_dir() else f"unsaved-{id(self):x}"
        return {"type": "generative", "name": self.name, "path": self.path, "hash": self._hash,
                "tokenizer": self.tokenizer_identity, "model_type": self._plain_model()[0].config.model_type,
                **{k: v for k, v in asdict(self.settings).items() if k != "tasks"}, "tasks": list(self.settings.tasks)}

    # -- inputs ---------------------------------------------------------------------------------------
    def task_index(self, task: str) -> int:
        try:
            return self.settings.tasks.index(task)
        except ValueError:
            raise ValueError(f"unknown task {task!r}; this model has prompts for {', '.join(self.settings.tasks)}"
                             ) from None

    def encode_inputs(self, texts: Sequence[str]) -> list[list[int]]:
        s = self.settings
        out = self.tokenizer([s.template.format(text=t) for t in texts], add_special_tokens=True, truncation=True,
                             max_length=s.max_length)["input_ids"]
        return [list(ids) for ids in out]

    def _embed(self, rows: Sequence[Sequence[int]], tasks: Sequence[str], *, left_pad: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings ``[soft prompt][tokens]`` per row, padded left (generation) or right (training)."""
        emb_layer = self.model.get_input_embeddings()
        device = emb_layer.weight.device
        soft = self.settings.prompt_length if self.soft_prompts is not None else 0
        width = soft + max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width - soft), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r)
            if left_pad:
                ids[i, width - soft - n :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - soft - n :] = 1
            else:
                ids[i, :n] = torch.tensor(r, dtype=torch.long)
                mask[i, : soft + n] = 1
        tok = emb_layer(ids.to(device))
        if not soft:
            return tok, mask.to(device)
        assert self.soft_prompts is not None
        prompts = self.soft_prompts[[self.task_index(t) for t in tasks]].to(tok.dtype)
        if not left_pad:
            return torch.cat([prompts, tok], dim=1), mask.to(device)
        out = torch.zeros((len(rows), width, tok.shape[-1]), dtype=tok.dtype, device=device)
        for i, r in enumerate(rows):  # left padding: [pad][soft][tokens]
            start = width - soft - len(r)
            out[i, start : start + soft] = prompts[i]
            out[i, start + soft :] = tok[i, width - soft - len(r) :]
            mask[i, start : start + soft] = 1
        return out, mask.to(device)

    # -- training ---------------------------------------------------------------------------------------
    def loss(self, texts: Sequence[str], tasks: Sequence[str], targets: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mean cross-entropy over the identifier tokens (and the EOS ending each identifier)."""
        if not (len(texts) == len(tasks) == len(targets)):
            raise ValueError("texts, tasks and targets must have one entry per example")
        eos = self.tokenizer.eos_token_id
        inputs = self.encode_inputs(texts)
        rows = [inp + [int(t) for t in tgt] + [eos] for inp, tgt in zip(inputs, targets, strict=True)]
        embeds, mask = self._embed(rows, tasks, left_pad=False)
        soft = embeds.shape[1] - max(len(r) for r in rows)
        labels = torch.full(mask.shape, -100, dtype=torch.long)
        for i, (inp, r) in enumerate(zip(inputs, rows, strict=True)):
            labels[i, soft + len(inp) : soft + len(r)] = torch.tensor(r[len(inp) :], dtype=torch.long)
        labels = labels.to(embeds.device)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits.float()
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100)

    # -- scoring given identifiers -------------------------------------------------------------------------
    @torch.no_grad()
    def score_keys(self, text: str, keys: Sequence[Sequence[int]], *, task: str = "retrieval",
                   chunk: int = 64) -> tuple[torch.Tensor, list[float]]:
        """What the LM thinks of identifiers it did not have to generate (SEAL's rescoring): the next-token
        log-probabilities after ``text`` (the first decoding step: every token's score as the start of an
        identifier, a float32 vector over the vocabulary) and each key's log-probability as the start of an
        identifier (teacher-forced, no EOS). The input is encoded once; its cache is shared by the keys."""
        import copy

        from transformers import DynamicCache

        model = self.model
        name = self._cache_argument()
        was_training = model.training
        model.eval()
        try:
            embeds, mask = self._embed(self.encode_inputs([text]), [task], left_pad=True)
            out = model(inputs_embeds=embeds, attention_mask=mask, use_cache=True, **{name: DynamicCache()})
            first = out.logits[0, -1].float().log_softmax(-1)
            scores = [float(first[int(k[0])]) if len(k) else 0.0 for k in keys]
            longer = [i for i, k in enumerate(keys) if len(k) > 1]
            pad = self.tokenizer.pad_token_id
            for s in range(0, len(longer), chunk):
                rows = longer[s : s + chunk]
                width = max(len(keys[i]) for i in rows) - 1  # the last token is only ever predicted
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                key_mask = torch.zeros((len(rows), width), dtype=torch.long)
                for j, i in enumerate(rows):
                    ids[j, : len(keys[i]) - 1] = torch.tensor([int(t) for t in keys[i][:-1]], dtype=torch.long)
                    key_mask[j, : len(keys[i]) - 1] = 1
                cache = copy.deepcopy(out.cache if getattr(out, "cache", None) is not None else out.past_key_values)
                cache.batch_repeat_interleave(len(rows))
                logits = model(input_ids=ids.to(embeds.device), **{name: cache}, use_cache=True,
                               attention_mask=torch.cat([mask.expand(len(rows), -1), key_mask.to(mask.device)], 1)
                               ).logits.float().log_softmax(-1)
                for j, i in enumerate(rows):
                    nxt = torch.tensor([int(t) for t in keys[i][1:]], dtype=torch.long, device=logits.device)
                    scores[i] += float(logits[j, : len(nxt)].gather(1, nxt[:, None]).sum())
        finally:
            model.train(was_training)
        return first, scores

    def _cache_argument(self) -> str:
        """The keyword this transformers version's forward takes a KV cache by: ``cache`` (5.2x on) or
        ``past_key_values`` (earlier); read once from the backbone's class (under a LoRA wrapper too)."""
        if self._cache_kw is None:
            import inspect

            base = self.model.get_base_model() if hasattr(self.model, "peft_config") else self.model
            params = inspect.signature(type(base).forward).parameters
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
        return self._cache_kw

    # -- decoding -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, texts: Sequence[str], *, task: str = "retrieval", constraint: Constraint | None = None,
                 num_beams: int = 10, num_return: int | None = None, max_new_tokens: int | None = None
                 ) -> list[list[Hypothesis]]:
        """Per text, up to ``num_return`` (default ``num_beams``) hypotheses, best first: identifier tokens
        (EOS stripped), their log-probability (EOS included) and each token's. With a ``constraint`` every
        identifier obeys it."""
        if not texts:
            return []
        eos = self.tokenizer.eos_token_id
        num_return = min(num_return or num_beams, num_beams)
        embeds, mask = self._embed(self.encode_inputs(texts), [task] * len(texts), left_pad=True)
        kwargs: dict[str, Any] = {}
        if constraint is not None:
            def allowed(_: int, ids: torch.Tensor) -> list[int]:
                return list(constraint(ids.tolist())) or [eos]

            kwargs["prefix_allowed_tokens_fn"] = allowed
        model = self.model
        was_training = model.training
        model.eval()
        try:
            if num_beams > 1:
                kwargs.update(length_penalty=0.0, early_stopping=True)
            out = model.generate(inputs_embeds=embeds, attention_mask=mask, num_beams=num_beams,
                                 num_return_sequences=num_return, do_sample=False,
                                 max_new_tokens=max_new_tokens or self.settings.max_new_tokens,
                                 pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos,
                                 return_dict_in_generate=True, output_scores=True, output_logits=num_beams == 1,
                                 **kwargs)
        finally:
            model.train(was_training)
        seqs = out.sequences.tolist()
        if num_beams > 1:
            steps = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices,
                                                    normalize_logits=False).tolist()
        else:
            steps = model.compute_transition_scores(out.sequences, out.logits, normalize_logits=True).tolist()
        results: list[list[Hypothesis]] = []
        for i in range(len(texts)):
            hyps = []
            seen: set[tuple[int, ...]] = set()
            for j in range(i * num_return, (i + 1) * num_return):
                seq = seqs[j]
                n = seq.index(eos) if eos in seq else len(seq)
                token_scores = [float(x) for x in steps[j][:n]]
                total = sum(float(x) for x in steps[j][: n + 1])  # EOS included
                if n == 0 or not math.isfinite(total):
                    continue  # a beam the constraint left without any allowed path (fewer identifiers than beams)
                tokens = tuple(seq[:n])
                if constraint is not None and eos not in constraint(list(tokens)):
                    continue  # a spare beam cut off inside an identifier (more beams than identifiers)
                if tokens in seen:
                    continue  # spare beams can repeat an identifier; the first is the best-scored
                seen.add(tokens)
                hyps.append(Hypothesis(list(tokens), total, token_scores))
            results.append(hyps)
        return results

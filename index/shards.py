"""Streaming corpus encoding in shards on disk: corpora larger than memory, restarts, and several processes.

The corpus is cut, in corpus order, into shards of ``shard_size`` documents. A shard is two files:
``shard-NNNNN.npy`` (float32 embeddings, read back memory-mapped) and ``shard-NNNNN.json`` (its document ids).
Each is written under a temporary name and renamed, the ids file last, so a shard whose ids file exists is
whole. ``shards.json`` holds the plan (corpus fingerprint and size, shard size, encoder identity). Encoding into a
folder that holds finished shards of the same plan skips them (a restart after a crash or ``kill -9`` redoes only
the unfinished shards); a folder with a different plan is refused, never mixed.

Under ``torchrun`` (process group from :mod:`uniret.distributed`), rank ``r`` of ``w`` encodes shards
``r, r + w, r + 2w, ...``, and every rank waits at a barrier; the caller's main rank then reads all shards in
order and builds one index (:meth:`uniret.index.faiss_index.FaissIndex.add_shards`). No process pool of our own.

Only the documents of one shard are held in memory at a time; the corpus is streamed from its file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from uniret import distributed
from uniret.atomic import write_text_atomic
from uniret.data import Corpus, Document
from uniret.errors import IndexMismatchError
from uniret.protocols import Encoder

logger = logging.getLogger(__name__)

PLAN_FILE = "shards.json"
FORMAT = 1
DEFAULT_SHARD_SIZE = 10_000


def _name(shard: int) -> str:
    return f"shard-{shard:05d}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def shard_plan(corpus: Corpus, encoder: Encoder, shard_size: int) -> dict[str, Any]:
    """What a shard folder holds: which corpus, cut how, encoded by which encoder."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"--shard-size must be a positive integer, got {shard_size!r}")
    identity = encoder.identity
    return {
        "format": FORMAT,
        "corpus": {"source": corpus.source, "fingerprint": corpus.fingerprint, "num_docs": len(corpus)},
        "shard_size": shard_size,
        "num_shards": -(-len(corpus) // shard_size),
        "encoder": json.loads(_canonical(identity)),
        "dimension": identity.get("dimension"),
    }


def _check_plan(directory: Path, plan: dict[str, Any]) -> None:
    """Write the plan, or check that the folder's plan is this one (a restart of the same encoding)."""
    path = directory / PLAN_FILE
    if not path.is_file():
        write_text_atomic(path, json.dumps(plan, indent=1, sort_keys=True))
        return
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexMismatchError(f"{path}: corrupt shard plan ({e}); expected the JSON written by an earlier "
                                 "encoding; remove the folder to start over") from None
    keys = ("format", "corpus", "shard_size", "encoder")
    differ = [k for k in keys if _canonical(found.get(k)) != _canonical(plan[k])]
    if differ:
        raise IndexMismatchError(
            f"{directory}: holds shards of another encoding (different {', '.join(differ)}: "
            f"{_canonical({k: found.get(k) for k in differ})[:300]}); expected the same corpus, shard size and "
            "encoder to resume, or an empty folder")


class ShardSet:
    """The finished shards of one plan, read back in corpus order (arrays memory-mapped)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / PLAN_FILE
        if not path.is_file():
            raise IndexMismatchError(f"{path}: missing; expected a shard folder written by encode_shards")
        self.plan: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))

    @property
    def num_shards(self) -> int:
        return int(self.plan["num_shards"])

    @property
    def num_docs(self) -> int:
        return int(self.plan["corpus"]["num_docs"])

    @property
    def dimension(self) -> int | None:
        return self.plan.get("dimension")

    def finished(self, shard: int) -> bool:
        return (self.directory / f"{_name(shard)}.json").is_file()

    def missing(self) -> list[int]:
        return [s for s in range(self.num_shards) if not self.finished(s)]

    def read(self, shard: int) -> tuple[list[str], np.ndarray]:
        """One shard's ids and embeddings (memory-mapped, read-only); a damaged shard raises
        :class:`IndexMismatchError` naming the file."""
        ids_path = self.directory / f"{_name(shard)}.json"
        npy_path = self.directory / f"{_name(shard)}.npy"
        try:
            ids = json.loads(ids_path.read_text(encoding="utf-8"))
            array = np.load(npy_path, mmap_mode="r")
        except FileNotFoundError as e:
            raise IndexMismatchError(f"{e.filename}: missing; shard {shard} is not finished "
                                     "(run the encoding again to finish it)") from None
        except (ValueError, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexMismatchError(f"{npy_path}: damaged shard ({e}); remove it and its .json, then run the "
                                     "encoding again") from None
        if not isinstance(ids, list) or array.ndim != 2 or array.shape[0] != len(ids) \
                or (self.dimension is not None and array.shape[1] != self.dimension):
            raise IndexMismatchError(f"{npy_path}: damaged shard (array {array.shape}, {len(ids)} ids, expected "
                                     f"({len(ids)}, {self.dimension})); remove it and its .json, then run the "
                                     "encoding again")
        return ids, array

    def __iter__(self) -> Iterator[tuple[list[str], np.ndarray]]:
        missing = self.missing()
        if missing:
            raise IndexMismatchError(f"{self.directory}: {len(missing)} of {self.num_shards} shards are not "
                                     f"finished (first: {_name(missing[0])}); run the encoding again to finish them")
        for shard in range(self.num_shards):
            yield self.read(shard)

    def ids(self) -> list[str]:
        return [i for ids, _ in self for i in ids]

    def head(self, rows: int) -> np.ndarray:
        """The first ``rows`` embeddings in corpus order (a training sample for a quantised index)."""
        parts, have = [], 0
        for _, array in self:
            parts.append(np.asarray(array[: rows - have], dtype=np.float32))
            have += len(parts[-1])
            if have >= rows:
                break
        return np.concatenate(parts) if parts else np.zeros((0, self.dimension or 0), np.float32)


def _save_shard(directory: Path, shard: int, ids: list[str], embeddings: Any, dimension: int | None) -> None:
    if not isinstance(embeddings, np.ndarray):
        raise TypeError(f"sharded encoding needs dense embeddings (numpy arrays); the encoder returned "
                        f"{type(embeddings).__name__}")
    array = np.ascontiguousarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != len(ids) or (dimension is not None and array.shape[1] != dimension):
        raise ValueError(f"the encoder returned an array of shape {array.shape} for {len(ids)} documents; expected "
                         f"({len(ids)}, {dimension})")
    npy = directory / f"{_name(shard)}.npy"
    tmp = directory / f".{npy.name}.tmp-{os.getpid()}.npy"
    try:
        np.save(tmp, array)
        os.replace(tmp, npy)
    finally:
        tmp.unlink(missing_ok=True)
    write_text_atomic(directory / f"{_name(shard)}.json", json.dumps(ids))  # last: the shard is whole


def _stream_shards(corpus: Corpus, shard_size: int, wanted: set[int]) -> Iterator[tuple[int, list[Document]]]:
    """``(shard, documents)`` for the wanted shards, streaming the corpus once (other documents are skipped)."""
    batch: list[Document] = []
    shard = 0
    for position, doc in enumerate(corpus):
        shard = position // shard_size
        if shard in wanted:
            batch.append(doc)
        if (position + 1) % shard_size == 0:
            if batch:
                yield shard, batch
            batch = []
    if batch:
        yield shard, batch


def encode_shards(encoder: Encoder, corpus: Corpus, directory: str | Path, *,
                  shard_size: int = DEFAULT_SHARD_SIZE) -> ShardSet:
    """Encode ``corpus`` into shards under ``directory`` (this rank's share under torchrun), skipping shards
    already finished under the same plan, then wait for every rank. Returns the folder's :class:`ShardSet`."""
    directory = Path(directory)
    plan = shard_plan(corpus, encoder, shard_size)
    directory.mkdir(parents=True, exist_ok=True)
    _check_plan(directory, plan)
    shards = ShardSet(directory)
    rank, world = distributed.rank(), distributed.world_size()
    mine = [s for s in range(shards.num_shards) if s % world == rank]
    todo = {s for s in mine if not shards.finished(s)}
    if len(todo) < len(mine):
        logger.info("rank %d: %d of its %d shards already finished in %s, skipped", rank, len(mine) - len(todo),
                    len(mine), directory)
    if todo:
        logger.info("rank %d of %d: encoding %d shards of up to %d documents into %s", rank, world, len(todo),
                    shard_size, directory)
        bar = tqdm(total=len(todo), desc=f"encoding shards (rank {rank})", unit="shard")
        for shard, docs in _stream_shards(corpus, shard_size, todo):
            embeddings = encoder.encode_documents([d.full_text() for d in docs])
            _save_shard(directory, shard, [d.id for d in docs], embeddings, shards.dimension)
            bar.update(1)
        bar.close()
    distributed.barrier()
    return shards

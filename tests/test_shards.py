"""Streaming shard encoding (issue 11): shards on disk equal a one-pass encoding, a restart skips finished shards,
a foreign or damaged shard folder is refused, and two torchrun ranks (gloo, CPU) build the index a single process
builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HashEncoder
from uniret.data import save_beir
from uniret.errors import IndexMismatchError
from uniret.index.faiss_index import FaissIndex
from uniret.index.shards import ShardSet, encode_shards


class Counting:
    """Wraps an encoder, counting document batches; ``fail_after``: raise on that many + 1-th call (a crash)."""

    def __init__(self, inner, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.calls, self.docs = inner, fail_after, 0, 0

    @property
    def identity(self):
        return self.inner.identity

    def encode_queries(self, texts):
        return self.inner.encode_queries(texts)

    def encode_documents(self, texts):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.docs += len(texts)
        return self.inner.encode_documents(texts)


def _one_pass(encoder, corpus) -> tuple[list[str], np.ndarray]:
    docs = list(corpus)
    return [d.id for d in docs], encoder.encode_documents([d.full_text() for d in docs])


def test_shards_equal_one_pass_and_index_from_shards(scifact_small, tmp_path):
    enc = HashEncoder(dim=32)
    corpus = scifact_small.corpus
    shards = encode_shards(enc, corpus, tmp_path / "s", shard_size=64)
    assert shards.num_shards == 4 and shards.missing() == []  # 200 docs: 64 + 64 + 64 + 8
    ids, vectors = _one_pass(enc, corpus)
    assert shards.ids() == ids
    np.testing.assert_array_equal(np.concatenate([np.asarray(a) for _, a in shards]), vectors)
    assert isinstance(shards.read(0)[1], np.memmap)  # read back memory-mapped, not loaded

    streamed = FaissIndex(enc, "flat")
    streamed.add_shards(shards, corpus)
    whole = FaissIndex(enc, "flat")
    whole.index(corpus)
    queries = dict(list(scifact_small.split_queries("test").items())[:10])
    assert streamed.search(queries, k=10) == whole.search(queries, k=10)
    got_ids, got = streamed.stored_vectors()
    assert got_ids == ids
    np.testing.assert_array_equal(got, vectors)


def test_quantised_index_trains_on_the_shards(scifact_small, tmp_path):
    enc = HashEncoder(dim=32)
    shards = encode_shards(enc, scifact_small.corpus, tmp_path / "s", shard_size=50)
    index = FaissIndex(enc, "IVF4,Flat", nprobe=4)
    index.add_shards(shards, scifact_small.corpus)
    assert index._index.ntotal == len(scifact_small.corpus) and index._index.is_trained
    hits = index.search({"q": scifact_small.corpus.to_dict()[scifact_small.corpus.ids[7]].text}, k=1)
    assert list(hits["q"]) == [scifact_small.corpus.ids[7]]


def test_restart_skips_finished_shards(scifact_small, tmp_path):
    corpus, folder = scifact_small.corpus, tmp_path / "s"
    crashing = Counting(HashEncoder(dim=32), fail_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_shards(crashing, corpus, folder, shard_size=30)
    partial = ShardSet(folder)
    assert partial.missing() == [2, 3, 4, 5, 6]  # 200 docs in 7 shards; two finished before the crash
    with pytest.raises(IndexMismatchError, match="5 of 7 shards are not finished"):
        FaissIndex(HashEncoder(dim=32)).add_shards(partial)

    resumed = Counting(HashEncoder(dim=32))
    shards = encode_shards(resumed, corpus, folder, shard_size=30)
    assert resumed.calls == 5 and resumed.docs == 200 - 60  # only the unfinished shards were encoded
    ids, vectors = _one_pass(HashEncoder(dim=32), corpus)
    assert shards.ids() == ids
    np.testing.assert_array_equal(np.concatenate([np.asarray(a) for _, a in shards]), vectors)

    again = Counting(HashEncoder(dim=32))
    encode_shards(again, corpus, folder, shard_size=30)
    assert again.calls == 0
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]  # no temporary file left behind


def test_a_foreign_or_damaged_folder_is_refused(scifact_small, tmp_path):
    corpus, folder = scifact_small.corpus, tmp_path / "s"
    encode_shards(HashEncoder(dim=32), corpus, folder, shard_size=64)
    with pytest.raises(IndexMismatchError, match="different shard_size"):
        encode_shards(HashEncoder(dim=32), corpus, folder, shard_size=32)
    with pytest.raises(IndexMismatchError, match="different encoder"):
        encode_shards(HashEncoder(dim=32, salt="other"), corpus, folder, shard_size=64)
    other = scifact_small.corpus.subset(corpus.ids[:50])
    with pytest.raises(IndexMismatchError, match="different corpus"):
        encode_shards(HashEncoder(dim=32), other, folder, shard_size=64)
    with pytest.raises(IndexMismatchError, match="another corpus"):
        FaissIndex(HashEncoder(dim=32)).add_shards(ShardSet(folder), other)

    npy = folder / "shard-00001.npy"
    npy.write_bytes(npy.read_bytes()[:100])
    with pytest.raises(IndexMismatchError, match="shard-00001.npy: damaged shard"):
        ShardSet(folder).read(1)
    with pytest.raises(ValueError, match="shard-size must be a positive integer"):
        encode_shards(HashEncoder(dim=32), corpus, tmp_path / "t", shard_size=0)


def _torchrun(*args: str, env: dict, ranks: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
                "-m", "uniret"]
    return subprocess.run(launcher + list(args), env=env, capture_output=True, text=True, timeout=300)


def test_two_torchrun_ranks_build_the_one_process_index(scifact, tmp_path):
    """Real MiniLM on real SciFact text: two gloo ranks (torchrun, CPU) each encode their shards, rank 0
    merges; the index equals the one-process build, vector for vector."""
    data = save_beir(scifact.sample(num_queries=5, num_docs=48, split="test"), tmp_path / "data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "UNIRET_ONNX_THREADS": "1"}
    common = ["index", "--data", str(data), "--retriever", "dense", "--model", "all-MiniLM-L6-v2",
              "--max-length", "64", "--device", "cpu"]
    two = _torchrun(*common, "--shard-size", "10", "--output", str(tmp_path / "two"), env=env, ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    from uniret.commands import RetrieverConfig, build_index

    build_index(data, RetrieverConfig(kind="dense", model="all-MiniLM-L6-v2", max_length=64, device="cpu"),
                tmp_path / "one")  # the one-process build, in this process
    assert not (tmp_path / "two.shards").exists()  # the default shard folder is removed once the index is saved

    a = FaissIndex.load(tmp_path / "one", device="cpu")
    b = FaissIndex.load(tmp_path / "two", device="cpu")
    ids_a, va = a.stored_vectors()
    ids_b, vb = b.stored_vectors()
    assert ids_a == ids_b == [d.id for d in load_corpus(data)]
    np.testing.assert_allclose(vb, va, atol=2e-6)
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["num_docs"] == 48


def load_corpus(path: Path):
    from uniret.data import load_beir

    return load_beir(path).corpus


def test_shard_size_is_refused_for_a_family_without_shards(scifact, tmp_path):
    from uniret.commands import RetrieverConfig, build_index

    data = save_beir(scifact.sample(num_queries=3, num_docs=20, split="test"), tmp_path / "data")
    with pytest.raises(ValueError, match="does not index from encoded shards"):
        build_index(data, RetrieverConfig(kind="bm25", shard_size=5), tmp_path / "out")

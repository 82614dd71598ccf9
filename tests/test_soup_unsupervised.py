from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from uniret.data import Corpus, Document
from uniret.train.soup import average_model_dirs, average_state_dicts
from uniret.train.unsupervised import cropping_pairs


def test_average_state_dicts_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([0, 1])}
    b = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([0, 1])}
    out = average_state_dicts([a, b])
    assert out["w"].tolist() == [2.0, 4.0] and out["ids"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="different weights"):
        average_state_dicts([a, {"w": a["w"]}])


def test_average_model_dirs(tmp_path):
    for i, v in enumerate((1.0, 3.0)):
        (tmp_path / f"m{i}").mkdir()
        save_file({"w": torch.full((2,), v)}, str(tmp_path / f"m{i}" / "model.safetensors"))
        (tmp_path / f"m{i}" / "config.json").write_text("{}")
    out = average_model_dirs([tmp_path / "m0", tmp_path / "m1"], tmp_path / "soup")
    from safetensors.torch import load_file

    assert load_file(str(out / "model.safetensors"))["w"].tolist() == [2.0, 2.0]
    assert (out / "config.json").is_file()


def test_cropping_pairs_are_spans_of_the_document(scifact):
    corpus = Corpus.from_documents(list(scifact.corpus.subset(scifact.corpus.ids[:20])))
    pairs = list(cropping_pairs(corpus, pairs_per_doc=2, word_deletion=0.0, seed=3))
    docs = {d.id: d.full_text() for d in corpus}
    assert len(pairs) == 40
    for r in pairs:
        text = docs[r.positive_ids[0]]
        assert r.query in text and r.positives[0] in text
        n = len(text.split())
        assert 1 <= len(r.query.split()) <= round(n * 0.5) + 1
    assert [r.query for r in pairs] == [r.query for r in cropping_pairs(corpus, pairs_per_doc=2, word_deletion=0.0,
                                                                        seed=3)]
    short = Corpus.from_documents([Document("a", "too short")])
    assert list(cropping_pairs(short)) == []

"""Cross-device negatives under torch.distributed: 2 CPU processes (gloo) give the single-process loss
and gradients on the concatenated batch."""

from __future__ import annotations

import datetime
import json
import os
import random
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyEmbedder, make_records  # noqa: E402
from uniret import distributed  # noqa: E402
from uniret.train.biencoder import BiEncoderModule, LossConfig  # noqa: E402

CFG = dict(hard_negatives=2, negative_sampling="top", false_negative_margin=0.3, distill_weight=0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    emb = TinyEmbedder(dropout=0.0, seed=0)
    records = make_records(8, 2, with_scores=True)
    local = records[rank * 4 : (rank + 1) * 4]
    module = BiEncoderModule(emb, LossConfig(**CFG))
    logs = module.step(local, random.Random(0), step=0)
    distributed.average_gradients(module.parameters())
    loss = distributed.all_reduce_mean(logs["loss"])
    grads = {n: p.grad.tolist() for n, p in emb.net.named_parameters()}
    Path(out, f"rank{rank}.json").write_text(json.dumps({"loss": loss, "grads": grads}))
    distributed.shutdown()  # on success only; a failing rank exits and mp.spawn stops the other


def test_two_process_gloo_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    emb = TinyEmbedder(dropout=0.0, seed=0)
    module = BiEncoderModule(emb, LossConfig(**CFG))
    logs = module.step(make_records(8, 2, with_scores=True), random.Random(0), step=0)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["loss"] == pytest.approx(logs["loss"], rel=1e-5)
        for name, p in emb.net.named_parameters():
            torch.testing.assert_close(torch.tensor(got["grads"][name]), p.grad, rtol=1e-4, atol=1e-6)
    assert not distributed.is_distributed()

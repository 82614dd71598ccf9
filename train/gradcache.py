"""Gradient caching (Gao et al., 2021): a contrastive batch larger than memory allows.

1. Embed every chunk of queries and documents without building graphs, recording the RNG state of each
   chunk (so dropout masks can be replayed).
2. Compute the loss on the full embedding matrices, made leaves that require grad; backward gives the
   gradient of the loss with respect to every embedding.
3. Re-embed each chunk with gradients, under its recorded RNG state, and back-propagate the cached
   embedding gradients into the model.

The loss value and the parameter gradients equal those of the plain (one-pass) step up to floating-point
error; ``tests/test_gradcache.py`` checks this with dropout on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Features = Any
ForwardFn = Callable[[Features], torch.Tensor]


class RngState:
    """The CPU (and CUDA) RNG state at creation; ``with state:`` replays it and restores the outer one."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self._fork: Any = None

    def __enter__(self) -> None:
        devices = list(range(torch.cuda.device_count())) if self.cuda is not None else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)

    def __exit__(self, *exc: Any) -> None:
        self._fork.__exit__(*exc)


def plain_step(forward: ForwardFn, query_chunks: Sequence[Features], doc_chunks: Sequence[Features],
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Embed everything with gradients, compute the loss, back-propagate; returns the detached loss."""
    q = torch.cat([forward(c) for c in query_chunks])
    d = torch.cat([forward(c) for c in doc_chunks])
    loss = loss_fn(q, d)
    loss.backward()
    return loss.detach()


def cached_step(forward: ForwardFn, query_chunks: Sequence[Features], doc_chunks: Sequence[Features],
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The same as :func:`plain_step`, holding only one chunk's activations at a time."""
    states: list[RngState] = []
    reps: list[torch.Tensor] = []
    with torch.no_grad():
        for chunk in [*query_chunks, *doc_chunks]:
            states.append(RngState())
            reps.append(forward(chunk))
    nq = len(query_chunks)
    q = torch.cat(reps[:nq]).detach().requires_grad_()
    d = torch.cat(reps[nq:]).detach().requires_grad_()
    loss = loss_fn(q, d)
    loss.backward()
    assert q.grad is not None and d.grad is not None
    grads = list(torch.split(q.grad, [r.shape[0] for r in reps[:nq]])) + list(
        torch.split(d.grad, [r.shape[0] for r in reps[nq:]]))
    for chunk, state, grad in zip([*query_chunks, *doc_chunks], states, grads, strict=True):
        with state:
            emb = forward(chunk)
        if emb.requires_grad:  # a side without parameters (an inference-free query lookup) has nothing to train
            emb.backward(grad)
    return loss.detach()

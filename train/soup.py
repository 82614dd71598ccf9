"""Checkpoint averaging (a uniform model soup): the element-wise mean of several checkpoints' weights.

Works on trainer checkpoints (``weights.safetensors``) and on saved model folders (every
``*.safetensors`` file, matched by name); integer tensors (e.g. position ids) are taken from the first.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from uniret.atomic import atomic_directory

logger = logging.getLogger(__name__)


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not states:
        raise ValueError("nothing to average")
    keys = set(states[0])
    for i, s in enumerate(states[1:], 2):
        if set(s) != keys:
            diff = sorted(keys ^ set(s))[:3]
            raise ValueError(f"checkpoint {i} has different weights than checkpoint 1 (e.g. {diff})")
    out = {}
    for k in states[0]:
        first = states[0][k]
        if any(s[k].shape != first.shape for s in states):
            raise ValueError(f"weight {k!r} has different shapes across checkpoints")
        if first.is_floating_point():
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(first.dtype)
        else:
            out[k] = first.clone()
    return out


def average_checkpoint_weights(checkpoints: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Average the ``weights.safetensors`` of trainer checkpoint folders."""
    return average_state_dicts([load_file(str(Path(c) / "weights.safetensors")) for c in checkpoints])


def average_model_dirs(model_dirs: Sequence[str | Path], output: str | Path) -> Path:
    """Average saved model folders (same architecture) into ``output``: the weights are averaged, every
    other file is copied from the first folder."""
    dirs = [Path(d) for d in model_dirs]
    files = sorted(p.relative_to(dirs[0]) for p in dirs[0].rglob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{dirs[0]}: no .safetensors weights to average")
    with atomic_directory(output, kind="model") as tmp:
        shutil.copytree(dirs[0], tmp, dirs_exist_ok=True)
        for rel in files:
            missing = [d for d in dirs if not (d / rel).is_file()]
            if missing:
                raise FileNotFoundError(f"{missing[0] / rel} is missing: the folders differ")
            save_file(average_state_dicts([load_file(str(d / rel)) for d in dirs]), str(tmp / rel))
    logger.info("averaged %d models into %s", len(dirs), output)
    return Path(output)

"""Weight-space combinations of models with one architecture: one mechanism, a weighted mean of state dicts.

- Checkpoint averaging (a uniform model soup): the element-wise mean of several checkpoints' weights.
- WiSE-FT (Wortsman et al., 2022): ``alpha * trained + (1 - alpha) * base``, the same weighted mean with
  weights ``(alpha, 1 - alpha)``; alpha 1 is the trained model and alpha 0 the base, bit for bit.
  :func:`select_alpha` chooses alpha from dev and out-of-domain numbers by a stated rule.

Works on trainer checkpoints (``weights.safetensors``) and on saved model folders (every
``*.safetensors`` file, matched by name); integer tensors (e.g. position ids) are taken from the first.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from uniret.atomic import atomic_directory

logger = logging.getLogger(__name__)


def weighted_state_dicts(states: Sequence[dict[str, torch.Tensor]],
                         weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """``sum_i weights[i] * states[i]`` for floating-point tensors (computed in fp32, cast back); integer
    tensors are taken from the first state. A weight of exactly 1 with the others 0 returns that state."""
    if not states:
        raise ValueError("nothing to combine")
    if len(weights) != len(states):
        raise ValueError(f"{len(weights)} weights for {len(states)} checkpoints")
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
            total = torch.zeros(first.shape, dtype=torch.float32, device=first.device)
            for s, w in zip(states, weights, strict=True):
                if w != 0.0:
                    total += float(w) * s[k].to(first.device, torch.float32)
            out[k] = total.to(first.dtype)
        else:
            out[k] = first.clone()
    return out


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform soup: the element-wise mean of ``states``."""
    if not states:
        raise ValueError("nothing to average")
    return weighted_state_dicts(states, [1.0 / len(states)] * len(states))


def interpolate_state_dicts(trained: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT: ``alpha * trained + (1 - alpha) * base``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return weighted_state_dicts([trained, base], [alpha, 1.0 - alpha])


def average_checkpoint_weights(checkpoints: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Average the ``weights.safetensors`` of trainer checkpoint folders."""
    return average_state_dicts([load_file(str(Path(c) / "weights.safetensors")) for c in checkpoints])


def average_model_dirs(model_dirs: Sequence[str | Path], output: str | Path) -> Path:
    """Average saved model folders (same architecture) into ``output``: the weights are averaged, every
    other file is copied from the first folder."""
    return combine_model_dirs(model_dirs, [1.0 / len(model_dirs)] * len(model_dirs), output)


def interpolate_model_dirs(trained: str | Path, base: str | Path, alpha: float, output: str | Path) -> Path:
    """WiSE-FT on saved model folders: ``alpha * trained + (1 - alpha) * base`` into ``output`` (every other
    file is copied from ``trained``)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return combine_model_dirs([trained, base], [alpha, 1.0 - alpha], output)


def combine_model_dirs(model_dirs: Sequence[str | Path], weights: Sequence[float], output: str | Path) -> Path:
    """The weighted mean of saved model folders' weights into ``output``; other files from the first."""
    if not model_dirs:
        raise ValueError("nothing to combine")
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
            save_file(weighted_state_dicts([load_file(str(d / rel)) for d in dirs], weights), str(tmp / rel))
    logger.info("combined %d models (weights %s) into %s", len(dirs), [round(w, 4) for w in weights], output)
    return Path(output)


def select_candidate(candidates: Sequence[dict[str, Any]], *, max_ood_drop: float,
                     what: str = "candidates") -> tuple[int, str]:
    """The config's model-selection rule over evaluated candidates, never test numbers; ``candidates`` come
    in order of preference for ties (e.g. the larger alpha, or the simpler model first).

    Each candidate is ``{"dev": score or None, "ood_drops": {name: base - candidate}}``. Among candidates whose
    drop is ``<= max_ood_drop`` on every out-of-domain set, the best dev score (ties, or no dev scores: the
    earliest); if none qualifies, the smallest worst-case drop (ties: the earliest). Returns (index, the reason
    in words)."""
    if not candidates:
        raise ValueError(f"no {what} to choose from")

    def worst(c: dict[str, Any]) -> float:
        drops = c.get("ood_drops") or {}
        return max(drops.values()) if drops else 0.0

    def dev(c: dict[str, Any]) -> float:
        return float("-inf") if c.get("dev") is None else float(c["dev"])

    eps = 1e-12
    within = [i for i, c in enumerate(candidates) if worst(c) <= max_ood_drop + eps]
    if within:
        best = max(within, key=lambda i: (dev(candidates[i]), -i))
        reason = (f"best dev score ({dev(candidates[best]):.4f}) among the {len(within)} of {len(candidates)} "
                  f"{what} whose out-of-domain drop is <= {max_ood_drop} on every set (worst drop "
                  f"{worst(candidates[best]):+.4f})")
        return best, reason
    best = min(range(len(candidates)), key=lambda i: (worst(candidates[i]), i))
    reason = (f"no {what[:-1] if what.endswith('s') else what} keeps every out-of-domain drop <= {max_ood_drop}; "
              f"chose the smallest worst drop ({worst(candidates[best]):+.4f})")
    logger.warning("model selection: %s (%s)", reason, best)
    return best, reason


def select_alpha(candidates: Sequence[dict[str, Any]], *, max_ood_drop: float) -> tuple[float, str]:
    """:func:`select_candidate` over WiSE-FT alphas (``{"alpha": a, "dev": ..., "ood_drops": ...}``); ties go
    to the larger alpha, the one closer to the trained model."""
    if not candidates:
        raise ValueError("no candidate alphas to choose from")
    ordered = sorted(candidates, key=lambda c: -c["alpha"])
    index, reason = select_candidate(ordered, max_ood_drop=max_ood_drop, what="alphas")
    return float(ordered[index]["alpha"]), reason

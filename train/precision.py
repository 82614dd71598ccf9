"""Mixed precision for training: the forward pass runs under ``torch.autocast`` in bfloat16 while the
weights, their gradients and the optimizer state stay float32 (master weights), and embeddings/logits are
cast back to float32 before any loss is computed.

``bf16`` pays off on GPUs and on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX); on CPUs without
it autocast emulates bfloat16 and is slower than float32, so it is never switched on implicitly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch

from uniret.runtime import inference_autocast  # the one bf16 autocast (and emulated-bf16 warning)

logger = logging.getLogger(__name__)

MixedPrecision = Literal["no", "bf16"]
MIXED_PRECISIONS = ("no", "bf16")


def autocast_forward(forward: Callable[[Any], torch.Tensor], mixed_precision: str,
                     device: str | torch.device) -> Callable[[Any], torch.Tensor]:
    """``forward`` itself for ``"no"``; for ``"bf16"``, a function that runs it under bfloat16 autocast on
    ``device``'s type and returns float32."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got {mixed_precision!r}")
    if mixed_precision == "no":
        return forward
    device_name = str(torch.device(device))

    def wrapped(features: Any) -> torch.Tensor:
        with inference_autocast("bf16", device_name):
            out = forward(features)
        return out.float()

    return wrapped

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

from uniret.runtime import native_bf16

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
    device_type = torch.device(device).type
    if device_type == "cpu" and not native_bf16():
        logger.warning("mixed_precision bf16 on a CPU without AVX512-BF16/AMX: bfloat16 is emulated and slower "
                       "than float32")

    def wrapped(features: Any) -> torch.Tensor:
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = forward(features)
        return out.float()

    return wrapped

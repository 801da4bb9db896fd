"""Dropout masks from cheap random bits, for CPU training.

`bernoulli_` draws one float per element; on CPU it is the slowest part of dropout (and of SDPA's
dropout, a fifth of a MiniLM training step). Here each int64 from torch's global generator gives
four 16-bit lanes compared against a threshold: the keep probability is 1 - p up to 2**-16, and
masks reproduce under `torch.manual_seed` and activation-checkpoint recomputation (which restores
the generator state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def random_int16(shape: torch.Size | tuple[int, ...], device: torch.device | None = None) -> Tensor:
    """Uniform int16 values over [-32768, 32767], four per int64 draw."""
    n = 1
    for size in shape:
        n *= size
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    return words.view(torch.int16)[:n].view(shape)


def keep_threshold(p: float) -> int:
    """int16 lanes >= this are kept: (65536 - round(65536 p)) of 65536 values."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1) for this path, got {p}")
    return round(p * 65536) - 32768


def dropout_keep(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | None = None) -> Tensor:
    """Boolean keep mask, True with probability 1 - p."""
    return random_int16(shape, device) >= keep_threshold(p)


class Dropout(nn.Module):
    """`nn.Dropout`, drawing its mask from `random_int16` in eager CPU training (about 2x faster);
    elsewhere, and under torch.compile (which fuses its own), `F.dropout`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0 or torch.compiler.is_compiling():
            return F.dropout(x, self.p, True)
        return _Dropout.apply(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Dropout(torch.autograd.Function):
    """x * keep / (1 - p); saves only the boolean keep mask."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # noqa: D102
        lanes = random_int16(x.shape, x.device)
        threshold = keep_threshold(p)
        scale = torch.ge(lanes, threshold, out=torch.empty(x.shape, dtype=x.dtype, device=x.device))
        ctx.save_for_backward(lanes >= threshold)
        ctx.scale = 1.0 / (1.0 - p)
        return scale.mul_(ctx.scale).mul_(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        (keep,) = ctx.saved_tensors
        return keep.to(grad.dtype).mul_(ctx.scale).mul_(grad), None

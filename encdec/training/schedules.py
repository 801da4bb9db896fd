"""Learning-rate schedules: a linear warmup, then one of the decays users know from transformers'
`lr_scheduler_type` and fairseq. Each is a `LambdaLR` whose factor multiplies the base LR of
every parameter group; `step` counts optimizer steps from 0, so step s is update n = s + 1 and
the warmup factor is n / warmup_steps (the first update already moves the weights)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR


def _with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, decay: Callable[[int], float]) -> LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay(step)

    return LambdaLR(optimizer, factor)


def linear(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Warmup, then linear decay to 0 at total_steps (the warm-starting recipe's schedule)."""
    span = max(1, total_steps - warmup_steps)
    return _with_warmup(optimizer, warmup_steps, lambda step: max(0.0, (total_steps - step) / span))


def cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Warmup, then half a cosine from 1 down to 0 at total_steps."""
    span = max(1, total_steps - warmup_steps)
    return _with_warmup(
        optimizer, warmup_steps,
        lambda step: 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span))),
    )


def constant_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Warmup, then the base LR until the end."""
    return _with_warmup(optimizer, warmup_steps, lambda step: 1.0)


def inverse_sqrt(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 4000) -> LambdaLR:
    """fairseq's: warmup to the base LR at update warmup_steps, then base * sqrt(warmup_steps / n)."""
    if warmup_steps < 1:
        raise ValueError("optim.warmup_steps must be >= 1 for inverse_sqrt: the decay is sqrt(warmup / update).")
    return _with_warmup(optimizer, warmup_steps, lambda step: math.sqrt(warmup_steps / (step + 1)))

"""Norms of every family: LayerNorm (BERT, GPT-2; ModernBERT's without bias) and RMSNorm (Llama's
`w * x`, Gemma's `(1 + w) * x`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encdec.nn.config import BackboneConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32: Llama's `w * x`, or Gemma's `(1 + w) * x` with
    the weight stored as an offset from 1 (`plus_one`), each rounded to the input dtype as theirs."""

    def __init__(self, width: int, eps: float, plus_one: bool = False) -> None:
        super().__init__()
        self.eps, self.plus_one = eps, plus_one
        self.weight = nn.Parameter(torch.zeros(width) if plus_one else torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.plus_one:
            return (y * (1.0 + self.weight.float())).type_as(x)
        return self.weight * y.to(x.dtype)


def make_norm(config: BackboneConfig, width: int | None = None) -> nn.Module:
    """The family's norm over `width` features (default: the hidden size)."""
    width = width or config.hidden_size
    if config.family.norm == "layer":
        return nn.LayerNorm(width, eps=config.layer_norm_eps, bias=config.layer_norm_bias)
    return RMSNorm(width, config.layer_norm_eps, plus_one=config.family.norm == "rms_plus_one")

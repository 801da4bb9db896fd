"""Other dynamic-int8 backends for encdec's serving model, measured against encdec's own
`dtype=int8` (torch.ao dynamic quantisation) by `generate.py --int8-candidates torchao,onednn`.
Benchmark-only: the package never imports these.

- torchao: torchao's `quantize_` with `Int8DynamicActivationInt8WeightConfig` (int8 weights one
  scale per output row, activations quantised per row at each call), the replacement PyTorch names
  for the deprecated `torch.ao.quantization.quantize_dynamic`, in eager mode.
- onednn: the oneDNN int8 matmul that torchao's x86 path lowers to under torch.compile
  (`torch.ops.onednn.qlinear_pointwise`), called eagerly: int8 weights with one scale per output
  row, activations quantised to uint8 per call with one scale and zero point.

Each replaces every nn.Linear and the LM head's vocabulary projection (through
`LMHead.projection_override`), as encdec.serving.int8 does.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


class OneDNNInt8Linear(nn.Module):
    """y = x W^T + b with W int8 (symmetric, per output row, prepacked) and x quantised to uint8
    per call."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        self.scale = weight.abs().amax(1).clamp_min(1e-8) / 127
        self.packed = torch.ops.onednn.qlinear_prepack(torch.round(weight / self.scale[:, None]).to(torch.int8), None)
        self.zero = torch.zeros(weight.shape[0], dtype=torch.long)
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        low, high = torch.aminmax(rows)
        scale = ((high.clamp(min=0) - low.clamp(max=0)) / 255).clamp_min(1e-8)
        zero_point = torch.round(-low.clamp(max=0) / scale).to(torch.int32)
        q = torch.clamp(torch.round(rows / scale) + zero_point, 0, 255).to(torch.uint8)
        y = torch.ops.onednn.qlinear_pointwise.tensor(q, scale, zero_point, self.packed, self.scale, self.zero,
                                                      self.bias, 1.0, 0, torch.float32, "none", [], "")
        return y.reshape(*x.shape[:-1], -1)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _replace(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, make(child))
        else:
            _replace(child, make)


def _heads(model: Any):
    """(backbone, fp32 nn.Linear of its vocabulary projection) for each backbone with an LM head."""
    for backbone in (model.encoder, model.decoder):
        if getattr(backbone, "head", None) is not None:
            yield backbone, _linear(backbone.output_embeddings().detach(), backbone.head.bias)


def torchao_int8(model: Any) -> Any:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = model.float().eval()
    heads = list(_heads(model))
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    for backbone, projection in heads:
        quantize_(projection, Int8DynamicActivationInt8WeightConfig())
        backbone.head.projection_override = projection
    model.quantized = "int8"
    return model


def onednn_int8(model: Any) -> Any:
    model = model.float().eval()
    heads = list(_heads(model))
    _replace(model, lambda layer: OneDNNInt8Linear(layer.weight, layer.bias))
    for backbone, projection in heads:
        backbone.head.projection_override = OneDNNInt8Linear(projection.weight, projection.bias)
    model.quantized = "int8"
    return model


CANDIDATES = {"torchao": torchao_int8, "onednn": onednn_int8}

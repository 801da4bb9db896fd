"""`dtype="int8"`: dynamic int8 quantisation of every linear layer and of the vocabulary projection,
for CPU serving only (Summarizer, `encdec summarize --dtype int8`, `evaluate.py dtype=int8`).

Opt-in and clearly not exact: weights are stored as int8 (one scale per tensor), activations are
quantised per call, so summaries differ from fp32 ones (docs/benchmarks.md reports the ROUGE change
on the benchmark set). Training and export always stay in floating point.

It uses PyTorch's `torch.ao` dynamic quantisation (fbgemm's int8 kernels), which PyTorch has marked
deprecated in favour of torchao. We measured torchao's replacement (`quantize_` with
`Int8DynamicActivationInt8WeightConfig`) and the oneDNN int8 matmul torchao's x86 path compiles to,
both on these CPU layers (docs/benchmarks.md, "int8 backends"): in eager mode torchao was slower
than fp32 here, and neither was faster than torch.ao, so torch.ao stays while PyTorch ships it. A
PyTorch without it makes `dtype=int8` a one-line error that names the other dtypes; nothing else
depends on it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn


def quantize_int8(model: Any) -> Any:
    """The model (on the CPU, in eval mode) with int8 linear layers and an int8 vocabulary
    projection; it is a serving copy: saving it is refused."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("dtype=int8 is dynamic quantisation for the CPU; on a GPU use bfloat16 or float16.")
    quantize_dynamic = _torch_ao_dynamic()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
        quantize_dynamic(model.float().eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)
        for backbone in (model.encoder, model.decoder):
            if getattr(backbone, "head", None) is not None:
                backbone.head.projection_override = _projection(backbone)
    model.quantized = "int8"
    return model


def _torch_ao_dynamic() -> Any:
    """torch.ao's `quantize_dynamic`, checked with the kernel it needs; a PyTorch that has removed
    them gets a one-line error instead of an ImportError from deep inside."""
    try:
        from torch.ao.nn.quantized.dynamic import Linear  # noqa: F401  (the layers it makes)
        from torch.ao.quantization import quantize_dynamic

        torch.ops.quantized.linear_dynamic  # noqa: B018  (the fbgemm kernel behind them)
    except (ImportError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"dtype=int8 needs torch.ao dynamic quantisation, which this PyTorch ({torch.__version__}) "
                         "no longer ships; serve in float32 (exact) or bfloat16 instead, or install a PyTorch "
                         "that has it (2.13 does).") from exc
    return quantize_dynamic


def _projection(backbone: nn.Module) -> nn.Module:
    """The LM head's vocabulary projection (tied word embeddings or its own matrix) as an int8 layer."""
    weight, bias = backbone.output_embeddings().detach(), backbone.head.bias
    layer = torch.ao.nn.quantized.dynamic.Linear(weight.shape[1], weight.shape[0], bias_=bias is not None)
    scale = max(float(weight.abs().max()), 1e-8) / 127
    layer.set_weight_bias(torch.quantize_per_tensor(weight, scale, 0, torch.qint8),
                          None if bias is None else bias.detach())
    return layer

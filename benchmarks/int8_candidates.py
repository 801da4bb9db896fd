"""Other dynamic-int8 backends for encdec's serving model, measured against encdec's own
`dtype=int8` (torch.ao dynamic quantisation) by `generate.py --int8-candidates torchao,onednn`
(speed and ROUGE on the real workload), and layer by layer by this script:

    python benchmarks/int8_candidates.py [--threads 1]

which times one linear layer of each decode and encoder shape of the quickstart model in fp32 and
each backend (process CPU time, best of 3 rounds, all in one process, backends side by side) and
its largest error against fp32 relative to the largest output. Benchmark-only: the package never
imports these.

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

import argparse
import time
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

# rows x in-features x out-features of the quickstart model's layers: decode steps of 16 rows (greedy)
# and 64 (beam 4 x 16), the vocabulary projection, and an encoder batch
SHAPES = [(16, 384, 1152), (16, 1536, 384), (16, 384, 30522), (64, 384, 1536), (64, 384, 30522), (1888, 384, 1152)]


def layer_backends(layer: nn.Linear) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The same fp32 layer as each backend runs it."""
    import copy
    import warnings

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    def torchao(config):
        copied = copy.deepcopy(layer)
        quantize_(copied, config)
        return copied

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_ao = torch.ao.quantization.quantize_dynamic(nn.Sequential(copy.deepcopy(layer)), {nn.Linear},
                                                          dtype=torch.qint8)
    return {"fp32": layer, "torch.ao (encdec today)": torch_ao,
            "torchao dynamic int8": torchao(Int8DynamicActivationInt8WeightConfig()),
            "torchao weight-only int8": torchao(Int8WeightOnlyConfig()),
            "oneDNN qlinear": OneDNNInt8Linear(layer.weight, layer.bias)}


def cpu_microseconds(f: Callable, x: torch.Tensor, calls: int) -> float:
    with torch.no_grad():
        f(x)
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for _ in range(calls):
                f(x)
            best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from bench_common import machine, markdown

    rows, names = [], []
    for m, k, n in SHAPES:
        torch.manual_seed(0)
        layer, x = nn.Linear(k, n).eval(), torch.randn(m, k)
        backends = layer_backends(layer)
        names = list(backends)
        with torch.no_grad():
            ref = layer(x)
            errors = {name: float((f(x) - ref).abs().max() / ref.abs().max()) for name, f in backends.items()}
        calls = max(3, int(1e8 / (m * k * n)))
        times = {name: cpu_microseconds(f, x, calls) for name, f in backends.items()}
        rows.append([f"{m} x {k} x {n}"] + [f"{times[name]:.0f} ({times['fp32'] / times[name]:.2f}x, "
                                              f"{100 * errors[name]:.1f}%)" for name in names])
    print(machine(args.threads))
    print("CPU microseconds per call (speed-up over fp32, largest error / largest output)")
    print(markdown(["rows x in x out"] + names, rows))


if __name__ == "__main__":
    main()

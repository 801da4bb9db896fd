"""The fused vocabulary projection + cross-entropy gives F.cross_entropy's loss and gradients."""

import pytest
import torch
import torch.nn.functional as F

from encdec.nn.loss import linear_cross_entropy


@pytest.mark.parametrize("chunk", [1, 3, 100])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_equals_cross_entropy_of_linear(chunk, with_bias, smoothing):
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 11, (7,), generator=g)
    inputs = [t for t in (rows, weight, bias) if t is not None]
    ref = F.cross_entropy(F.linear(rows, weight, bias), targets, label_smoothing=smoothing)
    for upstream in (1.0, 2.5):  # backward scales the stored gradients by the incoming one
        ours = linear_cross_entropy(rows, weight, bias, targets, chunk, scale=1 / 7, label_smoothing=smoothing)
        torch.testing.assert_close(ours.double(), ref)
        ref_grads = torch.autograd.grad(ref * upstream, inputs, retain_graph=True)
        for a, b in zip(torch.autograd.grad(ours * upstream, inputs), ref_grads):
            torch.testing.assert_close(a, b)


def test_without_grad_only_the_loss():
    rows, weight = torch.randn(4, 3), torch.randn(6, 3)
    targets = torch.tensor([0, 5, 2, 2])
    with torch.no_grad():
        ours = linear_cross_entropy(rows, weight, None, targets, 2)
    torch.testing.assert_close(ours, F.cross_entropy(F.linear(rows, weight), targets, reduction="sum"))


def test_label_smoothing_without_grad():
    rows, weight = torch.randn(4, 3), torch.randn(6, 3)
    targets = torch.tensor([0, 5, 2, 2])
    with torch.no_grad():
        ours = linear_cross_entropy(rows, weight, None, targets, 3, label_smoothing=0.2)
    ref = F.cross_entropy(F.linear(rows, weight), targets, reduction="sum", label_smoothing=0.2)
    torch.testing.assert_close(ours, ref)
    assert not torch.allclose(ref, F.cross_entropy(F.linear(rows, weight), targets, reduction="sum"))

"""Dropout from cheap random bits: the right keep probability and scale, exact gradients, seeded."""

import pytest
import torch

from encdec.nn.cpu_kernels import Dropout, dropout_keep


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_fraction_is_one_minus_p(p):
    torch.manual_seed(0)
    n = 1 << 22
    keep = dropout_keep((n,), p)
    assert abs(keep.float().mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5


def test_dropout_module_scales_kept_values_and_gradients():
    torch.manual_seed(0)
    drop = Dropout(0.25)
    x = torch.rand(512, 300) + 1.0
    x.requires_grad_()
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(grad, kept.float() / 0.75)
    assert torch.equal(drop.eval()(x), x)


def test_dropout_module_is_seeded():
    drop, x = Dropout(0.1), torch.randn(64, 64)
    torch.manual_seed(5)
    a = drop(x)
    torch.manual_seed(5)
    assert torch.equal(a, drop(x))

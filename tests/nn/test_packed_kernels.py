"""Packed attention on GPUs, checked on the CPU: the varlen kernel's inputs for ragged batches,
the kernel choice per device/dtype/dropout/mask, and the one-call padded path's numerics."""

from __future__ import annotations

import pytest
import torch

from encdec.nn.packing import PackedMask, packed_attention, packed_kernel, padded_attention


def test_cumulative_lengths_for_a_ragged_batch():
    mask = PackedMask([3, 1, 5, 2], [7, 4, 4, 9])
    cu_q, cu_k, max_q, max_k = mask.cumulative(torch.device("cpu"))
    assert cu_q.dtype == cu_k.dtype == torch.int32
    assert cu_q.tolist() == [0, 3, 4, 9, 11] and cu_k.tolist() == [0, 7, 11, 15, 24]
    assert (max_q, max_k) == (5, 9)
    assert mask.cumulative(torch.device("cpu"))[0] is cu_q  # built once per batch, reused by every layer


def test_padded_layout_places_rows_in_the_grid():
    q_index, k_index, grid_mask = PackedMask([2, 3], [1, 3]).padded_layout(torch.device("cpu"))
    assert q_index.tolist() == [0, 1, 3, 4, 5] and k_index.tolist() == [0, 3, 4, 5]
    assert grid_mask.shape == (2, 1, 1, 3)  # every query of a sequence sees the same keys
    assert grid_mask[0, 0, 0].tolist() == [True, False, False] and grid_mask[1, 0, 0].tolist() == [True] * 3
    causal = PackedMask([2, 3], [2, 3], causal=True).padded_layout(torch.device("cpu"))[2]
    assert causal[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]


@pytest.mark.parametrize("device, dtype, head_dim, dropout, mask, expected", [
    ("cpu", torch.bfloat16, 64, 0.0, PackedMask([3], [3]), "per_sequence"),
    ("cuda", torch.bfloat16, 64, 0.0, PackedMask([3, 2], [3, 2], causal=True), "varlen"),
    ("cuda", torch.float16, 128, 0.0, PackedMask([3, 2], [5, 4]), "varlen"),  # cross-attention
    ("cuda", torch.float32, 64, 0.0, PackedMask([3], [3]), "padded"),
    ("cuda", torch.bfloat16, 36, 0.0, PackedMask([3], [3]), "padded"),
    ("cuda", torch.bfloat16, 64, 0.1, PackedMask([3], [3]), "padded"),
    ("cuda", torch.bfloat16, 64, 0.0, PackedMask([3], [3], True, torch.tensor([False, True, True])), "padded"),
    ("mps", torch.bfloat16, 64, 0.0, PackedMask([3], [3]), "padded"),
])
def test_kernel_choice(device, dtype, head_dim, dropout, mask, expected):
    kernel, why = packed_kernel(device, dtype, head_dim, dropout, mask)
    assert kernel == expected
    assert bool(why) == (expected == "padded")


def _ragged(q_lengths, k_lengths, heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(q_lengths), heads, dim, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(sum(k_lengths), heads, dim, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(sum(k_lengths), heads, dim, generator=g, dtype=torch.float64, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("kind", ["self", "causal_with_key_gap", "cross"])
def test_padded_path_equals_the_per_sequence_path(kind):
    """The one-call path GPUs take when varlen does not apply gives the per-sequence results and
    gradients (float64 on the CPU)."""
    if kind == "cross":
        mask, shapes = PackedMask([3, 1, 4], [6, 2, 5]), ([3, 1, 4], [6, 2, 5])
    else:
        lengths = [4, 1, 3]
        keep = torch.ones(8, dtype=torch.bool)
        keep[[0, 4]] = False  # GPT-2: the first (pad == start) token of two sequences is no key
        mask = PackedMask(lengths, lengths, kind != "self", keep if kind != "self" else None)
        shapes = (lengths, lengths)
    q, k, v = _ragged(*shapes)
    reference = packed_attention(q, k, v, mask, 0.0)  # CPU: per sequence
    ours = padded_attention(q, k, v, PackedMask(mask.q_lengths, mask.k_lengths, mask.causal, mask.key_keep), 0.0)
    torch.testing.assert_close(ours, reference)
    for a, b in zip(torch.autograd.grad(ours.sum(), (q, k, v)), torch.autograd.grad(reference.sum(), (q, k, v))):
        torch.testing.assert_close(a, b)

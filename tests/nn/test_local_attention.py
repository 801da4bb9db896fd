"""Sliding-window attention in blocks (encdec.nn.local_attention) equals attention under the full
sliding-window mask, forward and backward, padded and packed, bidirectional (ModernBERT) and causal
(Gemma 2 without soft-capping, against transformers); and what it keeps for backward grows linearly
with the length, where the full mask's grows with its square."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import lm_batch, reference_lm

import encdec
from encdec.nn.local_attention import LocalWindow, local_attention
from encdec.nn.masks import sliding_mask
from encdec.nn.packing import Packing


def qkv(batch: int, heads: int, length: int, dim: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=g, requires_grad=True) for _ in range(3)]


def padding(batch: int, length: int) -> torch.Tensor:
    keep = torch.ones(batch, length, dtype=torch.bool)
    keep[1, length // 2:] = False
    keep[2, length - 1:] = False
    return keep


def dense(q, k, v, keep, window, causal):
    mask = sliding_mask(keep, q.shape[2], k.shape[2], window, causal, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length,window", [(14, 2), (17, 3), (16, 4), (5, 8), (9, 1), (1, 4)])
def test_blocks_equal_the_full_sliding_mask_forward_and_backward(length, window, causal):
    q, k, v = qkv(3, 2, length)
    keep = padding(3, length)
    got = local_attention(q, k, v, keep, window, causal)
    grads = torch.autograd.grad((got * keep[:, None, :, None]).square().sum(), (q, k, v))
    expected = dense(q, k, v, keep, window, causal)
    want = torch.autograd.grad((expected * keep[:, None, :, None]).square().sum(), (q, k, v))
    rows = keep[:, None, :, None].expand_as(got)
    torch.testing.assert_close(got[rows], expected[rows], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_wrong_window_does_not_match():
    """The comparison above can fail: a window one wider gives other outputs."""
    q, k, v = qkv(3, 2, 14)
    keep = padding(3, 14)
    assert not torch.allclose(local_attention(q, k, v, keep, 2, False), dense(q, k, v, keep, 3, False), atol=1e-3)


@pytest.mark.parametrize("causal", [False, True])
def test_packed_rows_equal_the_padded_grid(causal):
    q, k, v = qkv(3, 2, 14)
    keep = padding(3, 14)
    packing = Packing.from_mask(keep)
    window = LocalWindow.build(3, causal, None, 14, packing)
    packed = [packing.pack(t.transpose(1, 2)) for t in (q, k, v)]  # (N, H, D)
    got = window.attend(*packed)
    expected = packing.pack(local_attention(q, k, v, keep, 3, causal).transpose(1, 2))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def saved_for_backward(length: int, window: int) -> tuple[int, int]:
    """(largest, total) numbers of elements autograd keeps for backward of one local attention."""
    sizes = []
    q, k, v = qkv(1, 2, length, dim=4)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        local_attention(q, k, v, None, window, False).sum()
    return max(sizes), sum(sizes)


def test_memory_kept_for_backward_is_linear_in_length():
    small, large = saved_for_backward(1024, 16), saved_for_backward(4096, 16)
    assert large[1] <= 4.5 * small[1]  # 4x the tokens: about 4x the memory, not 16x
    assert large[0] < 4096 * 4096 // 8  # no T x T tensor


def test_causal_window_equals_transformers_gemma2_without_soft_capping(tmp_path):
    """Gemma 2's causal sliding layers (window 3, 9-token rows with padding) through the blocks: the
    backbone's own forward (the single-model class's forward is the explicit path, a full mask)."""
    ref = reference_lm("gemma2", attn_logit_softcapping=None, final_logit_softcapping=None)
    ref.save_pretrained(tmp_path)
    ours = encdec.Gemma2ForCausalLM.from_pretrained(tmp_path)
    ids, mask = lm_batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).logits
        got = ours.backbone.logits(ours.backbone(ids, mask))
    keep = mask.bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-4, rtol=1e-4)


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for backward of fn()."""
    storages = {}

    def keep(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        fn()
    return sum(storages.values())


def test_packed_rows_keep_no_more_for_backward_than_the_padded_grid():
    """Moving packed rows onto the grid and back keeps only indices for backward, not copies of q, k, v."""
    q, k, v = qkv(2, 4, 512, dim=16)
    keep = torch.ones(2, 512, dtype=torch.bool)
    packing = Packing.from_mask(keep)
    window = LocalWindow.build(8, False, None, 512, packing)
    packed = [packing.pack(t.transpose(1, 2)).detach().requires_grad_() for t in (q, k, v)]
    padded = saved_bytes(lambda: local_attention(q, k, v, keep, 8, False))
    assert saved_bytes(lambda: window.attend(*packed)) <= padded + 2 * 512 * 8  # + the int64 index

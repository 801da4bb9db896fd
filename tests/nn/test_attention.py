"""The CPU dropout attention: SDPA's semantics, exact gradients, the right keep probability, and
packed (per-sequence) attention equal to padded attention."""

import pytest
import torch
import torch.nn.functional as F

from encdec.nn.cpu_kernels import attention, dropout_attention
from encdec.nn.packing import PackedMask, Packing, packed_attention


def _qkv(b=2, h=3, t=5, s=6, d=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g, dtype=dtype) for shape in ((b, h, t, d), (b, h, s, d), (b, h, s, d)))


def _masks(b=2, t=5, s=6):
    """None, a padding mask with a fully padded row, and a causal mask whose first row sees nothing."""
    padding = torch.ones(b, 1, 1, s, dtype=torch.bool)
    padding[0, ..., 4:] = False
    padding[1] = False
    causal = torch.ones(t, s, dtype=torch.bool).tril(s - t)
    causal[0] = False
    return {"none": None, "padding": padding, "causal": causal[None, None].expand(b, 1, t, s)}


def _explicit(q, k, v, mask, keep, p):
    """The math written out, differentiated by autograd."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, -1).nan_to_num(0.0)  # fully masked rows -> zero output
    return (probs * keep / (1 - p)) @ v


@pytest.mark.parametrize("mask_name", ["none", "padding", "causal"])
def test_no_drop_equals_sdpa(mask_name):
    q, k, v = _qkv(dtype=torch.float32)
    mask = _masks()[mask_name]
    keep = torch.ones(2, 3, 5, 6, dtype=torch.bool)
    ours = dropout_attention(q, k, v, mask, 0.25, keep=keep) * 0.75
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mask_name", ["none", "padding", "causal"])
def test_gradients_equal_explicit_math(mask_name):
    q, k, v = (t.requires_grad_() for t in _qkv())
    mask = _masks()[mask_name]
    keep = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(1)) > 0.3
    fn = lambda q, k, v: dropout_attention(q, k, v, mask, 0.3, keep=keep)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))
    torch.testing.assert_close(fn(q, k, v), _explicit(q, k, v, mask, keep, 0.3))
    grad = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    ours = torch.autograd.grad(fn(q, k, v), (q, k, v), grad)
    ref = torch.autograd.grad(_explicit(q, k, v, mask, keep, 0.3), (q, k, v), grad)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_chunked_over_heads_equals_one_chunk(monkeypatch):
    """Small chunks (many per call) give the same result as one."""
    import encdec.nn.cpu_kernels as attn

    q, k, v = (t.requires_grad_() for t in _qkv(b=2, h=5, t=7, s=9))
    keep = torch.rand(2, 5, 7, 9) > 0.2
    mask = torch.rand(2, 1, 7, 9) > 0.3
    whole = dropout_attention(q, k, v, mask, 0.2, keep=keep)
    grads = torch.autograd.grad(whole.sum(), (q, k, v))
    monkeypatch.setattr(attn, "_CHUNK_SCORES", 2 * 7 * 9)  # two heads per chunk
    chunked = dropout_attention(q, k, v, mask, 0.2, keep=keep)
    torch.testing.assert_close(chunked, whole)
    for a, b in zip(torch.autograd.grad(chunked.sum(), (q, k, v)), grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_fraction_is_one_minus_p(p):
    """Uniform probabilities and v = 1 make each output the row's kept share / (1 - p)."""
    torch.manual_seed(0)
    q = torch.zeros(1, 4, 64, 8)
    out = attention(q, torch.zeros(1, 4, 256, 8), torch.ones(1, 4, 256, 8), None, p)
    assert abs(out.mean().item() - 1) < 5 * (p / (1 - p) / (4 * 64 * 256)) ** 0.5


def test_seeded_and_reproducible():
    q, k, v = _qkv(dtype=torch.float32)
    torch.manual_seed(3)
    a = attention(q, k, v, None, 0.1)
    torch.manual_seed(3)
    b = attention(q, k, v, None, 0.1)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, attention(q, k, v, None, 0.1))


@pytest.mark.parametrize("causal", [False, True])
def test_packed_attention_equals_padded(causal):
    """Per-sequence attention over packed tokens equals padded SDPA with masks, key gaps included."""
    torch.manual_seed(0)
    lengths = [5, 2, 0, 4]
    grid = torch.arange(5)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    key_mask = grid.clone()
    key_mask[0, 0] = key_mask[3, 1] = False  # keys that exist but may not be attended (GPT-2's pad start)
    q, k, v = (torch.randn(4, 2, 5, 3) for _ in range(3))  # (B, H, T, D)
    mask = key_mask[:, None, None, :]
    if causal:
        mask = mask & torch.ones(5, 5, dtype=torch.bool).tril()
    padded = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    packing = Packing.from_mask(grid)
    packed = [packing.pack(t.transpose(1, 2)) for t in (q, k, v)]  # (N, H, D)
    spec = PackedMask.self_attention(packing, key_mask, causal)
    out = packed_attention(*packed, spec, 0.0)
    torch.testing.assert_close(out, packing.pack(padded.transpose(1, 2)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_packed_dropout_attention_equals_per_sequence(causal):
    """With dropout, packed attention draws the same masks as one call per sequence, in order
    (4 heads, so each sequence takes whole int64 draws)."""
    lengths, key_lengths = [5, 2, 0, 4], [3, 2, 1, 6]
    if causal:
        key_lengths = lengths
    grid = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    key_grid = torch.arange(6)[None] < torch.tensor(key_lengths)[:, None]
    key_mask = key_grid.clone()
    key_mask[0, 0] = key_mask[3, 1] = False
    packing, key_packing = Packing.from_mask(grid), Packing.from_mask(key_grid)
    q = torch.randn(packing.index.shape[0], 4, 3, requires_grad=True)
    k, v = (torch.randn(key_packing.index.shape[0], 4, 3, requires_grad=True) for _ in range(2))
    spec = PackedMask(packing.lengths, key_packing.lengths, causal, key_packing.pack(key_mask))
    torch.manual_seed(0)
    packed = packed_attention(q, k, v, spec, 0.3)
    torch.manual_seed(0)
    pieces, q0, k0 = [], 0, 0
    for b, (t, s) in enumerate(zip(lengths, key_lengths)):
        mask = key_mask[b, :s][None, None, None, :]
        if causal:
            mask = mask & torch.ones(t, s, dtype=torch.bool).tril()
        qb, kb, vb = (x[o:o + n].transpose(0, 1)[None] for x, o, n in ((q, q0, t), (k, k0, s), (v, k0, s)))
        if t and s:
            pieces.append(dropout_attention(qb, kb, vb, mask, 0.3)[0].transpose(0, 1))
        q0, k0 = q0 + t, k0 + s
    reference = torch.cat(pieces)
    torch.testing.assert_close(packed, reference)
    grad = torch.randn_like(packed)
    for a, b in zip(torch.autograd.grad(packed, (q, k, v), grad), torch.autograd.grad(reference, (q, k, v), grad)):
        torch.testing.assert_close(a, b)

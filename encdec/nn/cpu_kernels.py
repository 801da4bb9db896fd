"""The CPU training kernels: dropout and attention-with-dropout from cheap random bits.

Dropout: `bernoulli_` draws one float per element; on CPU it is the slowest part of dropout (and of SDPA's
dropout, a fifth of a MiniLM training step). Here each int64 from torch's global generator gives
four 16-bit lanes compared against a threshold: the keep probability is 1 - p up to 2**-16, and
masks reproduce under `torch.manual_seed` and activation-checkpoint recomputation (which restores
the generator state).

Attention with dropout, without what makes SDPA slow on CPU: `F.scaled_dot_product_attention` with
`dropout_p > 0` on CPU falls back to its math path: a `bernoulli_` over every (query, key) pair
(a fifth of a MiniLM training step) and S x S
probabilities, dropped probabilities and masks kept for backward. `DropoutAttention` instead draws
the dropout mask from cheap 16-bit random lanes and keeps only q, k, v, the output and those lanes;
backward recomputes the probabilities (as flash attention does). Semantics match SDPA:
boolean masks (True = attend), scale 1/sqrt(head_dim), outputs scaled by 1/(1-p), and a query
that sees no key gets a zero output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def random_int16(shape: torch.Size | tuple[int, ...], device: torch.device | None = None) -> Tensor:
    """Uniform int16 values over [-32768, 32767], four per int64 draw."""
    n = 1
    for size in shape:
        n *= size
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    return words.view(torch.int16)[:n].view(shape)


def keep_threshold(p: float) -> int:
    """int16 lanes >= this are kept: (65536 - round(65536 p)) of 65536 values."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1) for this path, got {p}")
    return round(p * 65536) - 32768


def dropout_keep(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | None = None) -> Tensor:
    """Boolean keep mask, True with probability 1 - p."""
    return random_int16(shape, device) >= keep_threshold(p)


class Dropout(nn.Module):
    """`nn.Dropout`, drawing its mask from `random_int16` in eager CPU training (about 2x faster);
    elsewhere, and under torch.compile (which fuses its own), `F.dropout`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0 or torch.compiler.is_compiling():
            return F.dropout(x, self.p, True)
        return _Dropout.apply(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Dropout(torch.autograd.Function):
    """x * keep / (1 - p); saves only the boolean keep mask."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # noqa: D102
        lanes = random_int16(x.shape, x.device)
        threshold = keep_threshold(p)
        scale = torch.ge(lanes, threshold, out=torch.empty(x.shape, dtype=x.dtype, device=x.device))
        ctx.save_for_backward(lanes >= threshold)
        ctx.scale = 1.0 / (1.0 - p)
        return scale.mul_(ctx.scale).mul_(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        (keep,) = ctx.saved_tensors
        return keep.to(grad.dtype).mul_(ctx.scale).mul_(grad), None


# ---------------------------------------------------------------------- attention with dropout



def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float, is_causal: bool = False) -> Tensor:
    """SDPA, except eager CPU training with dropout, which takes `DropoutAttention` (under
    torch.compile, SDPA is left for the compiler to fuse). q (B, H, T, D), k/v (B, H, S, D), mask
    boolean broadcastable to (B, H, T, S)."""
    if 0.0 < dropout < 1.0 and q.device.type == "cpu" and not torch.compiler.is_compiling():
        if is_causal:
            mask = causal_rows(q.shape[-2], k.shape[-2], q.device)
        return dropout_attention(q, k, v, mask, dropout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)


def causal_rows(q_len: int, k_len: int, device: torch.device) -> Tensor:
    """Boolean (T, S): query i sees keys j <= i + (S - T), SDPA's `is_causal` alignment."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)


@dataclass
class Segment:
    """One attention problem inside the tensors given to `DropoutAttention`: q[q_index] is
    (H, T, D), k[k_index] and v[k_index] are (H, S, D). `bias` (H|1, T|1, S) is added to the
    scores (very negative for masked keys); `dead` (H|1, T, 1) marks queries that see no key."""

    q_index: tuple
    k_index: tuple
    bias: Tensor | None = None
    dead: Tensor | None = None


def mask_bias(mask: Tensor | None, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
    """Boolean mask (True = attend) -> (additive bias, rows that see no key, or None if there are none)."""
    if mask is None:
        return None, None
    # Half the lowest finite value: exp() of a masked score underflows to 0, yet a fully masked row
    # stays finite (its zero output comes from `dead`), where -inf would give NaN.
    masked = torch.finfo(dtype).min / 2
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, masked)
    dead = ~mask.any(-1, keepdim=True)
    return bias, dead if bool(dead.any()) else None


def dropout_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, p: float, keep: Tensor | None = None
) -> Tensor:
    """softmax(q k^T / sqrt(D), masked) with dropout, then @ v, for q (B, H, T, D). `keep`
    (B, H, T, S), True = kept, fixes the dropout mask (tests); by default one is drawn."""
    if mask is not None:
        mask = mask.reshape((1,) * (4 - mask.dim()) + mask.shape)  # (B|1, H|1, T|1, S)
    bias, dead = mask_bias(mask, q.dtype)
    segments = [Segment((i,), (i,), _row(bias, i), _row(dead, i)) for i in range(q.shape[0])]
    return DropoutAttention.apply(q, k, v, segments, p, keep)


def _row(x: Tensor | None, i: int) -> Tensor | None:
    return None if x is None else x[i if x.shape[0] > 1 else 0]


class DropoutAttention(torch.autograd.Function):
    """Each segment: out = (softmax(q k^T / sqrt(D) + bias) * keep) @ v / (1 - p), dead rows zero;
    rows of q in no segment get zero.

    Works through head groups whose T x S scores stay in cache, reusing workspaces, and saves only
    q, k, v, out and the random 16-bit lanes that decide the keep mask (2 bytes a score, drawn in
    one call for all segments): backward recomputes the probabilities instead of storing them."""

    @staticmethod
    def forward(ctx, q, k, v, segments, p, keep):  # noqa: D102 - see the class docstring
        sizes = [q[seg.q_index].shape[:2].numel() * k[seg.k_index].shape[1] for seg in segments]
        if keep is None:
            lanes = random_int16((sum(sizes),), q.device)
        else:  # a fixed mask (tests): kept -> the top lane value, dropped -> the bottom one
            lanes = torch.where(keep.reshape(-1), 32767, -32768).to(torch.int16)
        threshold = keep_threshold(p)
        out = torch.zeros_like(q)  # laid out like q's storage, so the caller's reshape is free
        work = _Workspace(q)
        for seg, seg_lanes in zip(segments, lanes.split(sizes)):
            qkv = (q[seg.q_index], k[seg.k_index], v[seg.k_index])
            _forward_segment(*qkv, seg, seg_lanes, threshold, work, out[seg.q_index])
        out.mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(q, k, v, lanes, out)
        ctx.segments, ctx.sizes, ctx.p = segments, sizes, p
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        q, k, v, lanes, out = ctx.saved_tensors
        row = (grad_out * out).sum(-1, keepdim=True)  # sum_j dL/dP_ij P_ij, per query
        grad_out = grad_out * (1.0 / (1.0 - ctx.p))  # dL/d(kept probs) = grad_out @ (v / (1 - p))^T
        grads = tuple(torch.zeros_like(x) for x in (q, k, v))
        work = _Workspace(q)
        threshold = keep_threshold(ctx.p)
        for seg, seg_lanes in zip(ctx.segments, lanes.split(ctx.sizes)):
            views = [x[seg.q_index] for x in (q, grad_out, row, grads[0])]
            views += [x[seg.k_index] for x in (k, v, grads[1], grads[2])]
            _backward_segment(*views, seg, seg_lanes, threshold, work)
        scale = q.shape[-1] ** -0.5
        return grads[0].mul_(scale), grads[1].mul_(scale), grads[2], None, None, None


def _forward_segment(q, k, v, seg: Segment, lanes: Tensor, threshold: int, work: _Workspace, out: Tensor) -> None:
    """out (H, T, D) = dropped probabilities @ v, head group by head group."""
    lanes = lanes.view(q.shape[0], q.shape[1], k.shape[1])
    for heads in _head_groups(lanes.shape):
        probs = _probs(q[heads], k[heads], _heads_of(seg.bias, heads), work.get(0, lanes[heads].shape))
        keep = torch.ge(lanes[heads], threshold, out=work.get(1, probs.shape))  # 1.0 kept, 0.0 dropped
        torch.matmul(probs.mul_(keep), v[heads], out=out[heads])
    if seg.dead is not None:
        out.masked_fill_(seg.dead, 0.0)


def _backward_segment(
    q, grad_out, row, grad_q, k, v, grad_k, grad_v, seg: Segment, lanes: Tensor, threshold: int, work: _Workspace
) -> None:
    """One segment's gradients (grad_q, grad_k still to be scaled by 1/sqrt(D)).

    With P the probabilities, K the keep mask and A = P * K the kept ones: dV = A^T dO',
    dA = dO' V^T, and the softmax backward dS = P * (dA * K - row) = dA * A - row * P."""
    if seg.dead is not None:
        grad_out.masked_fill_(seg.dead, 0.0)
    lanes = lanes.view(q.shape[0], q.shape[1], k.shape[1])
    for heads in _head_groups(lanes.shape):
        probs = _probs(q[heads], k[heads], _heads_of(seg.bias, heads), work.get(0, lanes[heads].shape))
        kept = torch.ge(lanes[heads], threshold, out=work.get(1, probs.shape)).mul_(probs)  # A
        grad_s = torch.matmul(grad_out[heads], v[heads].transpose(-2, -1), out=work.get(2, probs.shape))
        grad_s.mul_(kept).addcmul_(probs, row[heads], value=-1.0)
        torch.matmul(kept.transpose(-2, -1), grad_out[heads], out=grad_v[heads])
        torch.matmul(grad_s, k[heads], out=grad_q[heads])
        torch.matmul(grad_s.transpose(-2, -1), q[heads], out=grad_k[heads])


_CHUNK_SCORES = 1 << 20  # scores per head group: ~4 MB of fp32, near the L2 size


def _head_groups(shape: torch.Size):
    """Equal slices of heads with at most ~_CHUNK_SCORES scores each (at least one head)."""
    h, t, s = shape
    groups = min(h, -(-h * t * s // _CHUNK_SCORES))  # ceil
    per = -(-h // max(1, groups))
    return [slice(start, min(h, start + per)) for start in range(0, h, per)]


def _heads_of(x: Tensor | None, heads: slice) -> Tensor | None:
    """The part of a (H|1, ...) tensor for `heads`."""
    return x if x is None or x.shape[0] == 1 else x[heads]


class _Workspace:
    """Flat buffers reused across head groups and segments: a fresh multi-MB tensor per group
    costs about as much in page faults as the arithmetic done in it."""

    def __init__(self, like: Tensor) -> None:
        self.like = like
        self.buffers: dict[int, Tensor] = {}

    def get(self, j: int, shape: torch.Size) -> Tensor:
        n = shape.numel()
        if j not in self.buffers or self.buffers[j].numel() < n:
            self.buffers[j] = torch.empty(n, dtype=self.like.dtype, device=self.like.device)
        return self.buffers[j][:n].view(shape)


def _probs(q: Tensor, k: Tensor, bias: Tensor | None, scores: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(D) + bias) for one head group, computed in `scores` (scale folded into
    the matmul, softmax in place)."""
    scale = q.shape[-1] ** -0.5
    if bias is None:
        torch.baddbmm(scores, q, k.transpose(-2, -1), beta=0.0, alpha=scale, out=scores)
    else:
        torch.baddbmm(bias.expand(scores.shape), q, k.transpose(-2, -1), alpha=scale, out=scores)
    return torch.softmax(scores, dim=-1, out=scores)

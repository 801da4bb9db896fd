"""Cross-entropy through the vocabulary projection without keeping logits.

The logits of a chunk of rows (rows x vocabulary, 125 MB for 1024 BERT rows) are the largest
tensor of a training step. `linear_cross_entropy` computes each chunk's logits, its loss and, when
a gradient will be needed, the gradients of the rows, weight and bias right away, so the logits
are freed chunk by chunk; backward only scales the stored gradients. That is one vocabulary
matmul fewer than recomputing the logits in backward (activation checkpointing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK_BYTES = 30 << 20  # a chunk's fp32 logits stay under glibc's 32 MB mmap limit, so the
# allocator reuses their memory instead of mapping (and page-faulting) fresh pages for each chunk


def linear_cross_entropy(
    rows: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int | None = None,
    scale: float = 1.0, label_smoothing: float = 0.0,
) -> Tensor:
    """scale * sum_i cross_entropy(rows_i @ weight^T + bias, targets_i, label_smoothing); rows (N, C),
    weight (V, C). `chunk_size` rows at a time (default: as many as fit CHUNK_BYTES of logits).
    Label smoothing as torch defines it: the target gets 1 - eps of the mass, every class eps / V."""
    if chunk_size is None:
        chunk_size = max(1, CHUNK_BYTES // (4 * weight.shape[0]))
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (rows, weight, bias))
    if not needs_grad:
        total = sum(_chunk_loss(rows[i:i + chunk_size], weight, bias, targets[i:i + chunk_size], label_smoothing)
                    for i in range(0, rows.shape[0], chunk_size))
        return rows.new_zeros((), dtype=torch.float32) + total * scale
    return LinearCrossEntropy.apply(rows, weight, bias, targets, chunk_size, scale, label_smoothing)


def _chunk_loss(rows: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, label_smoothing: float) -> Tensor:
    logits = F.linear(rows, weight, bias).float()
    return F.cross_entropy(logits, targets, reduction="sum", label_smoothing=label_smoothing)


def compute_dtype(rows: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype the projection runs in: autocast's when it is on (bf16/fp16 mixed precision),
    else the inputs' common dtype. Logits are always turned to fp32 for the softmax."""
    device = rows.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(rows.dtype, weight.dtype)


class LinearCrossEntropy(torch.autograd.Function):
    """Loss and gradients computed together in forward, one chunk of rows at a time.

    Autocast is switched off inside and every operand cast to `compute_dtype` once, so each buffer
    has a dtype chosen from the inputs: row gradients in the compute dtype (returned in the rows'
    dtype), weight and bias gradients accumulated in fp32 (returned in the parameters' dtype), the
    loss summed in fp32."""

    @staticmethod
    def forward(ctx, rows, weight, bias, targets, chunk_size, scale, label_smoothing):  # noqa: D102 - see the class docstring
        dtype = compute_dtype(rows, weight)
        with torch.autocast(rows.device.type, enabled=False):
            loss, grads = _loss_and_grads(rows.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
                                          targets, chunk_size, scale, label_smoothing)
        grad_rows, grad_weight, grad_bias = grads
        ctx.save_for_backward(
            grad_rows.to(rows.dtype), grad_weight.to(weight.dtype), None if bias is None else grad_bias.to(bias.dtype)
        )
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # noqa: D102
        grads = ctx.saved_tensors
        if not bool(grad_loss == 1.0):
            grads = tuple(None if g is None else g * grad_loss.to(g.dtype) for g in grads)
        return (*grads, None, None, None, None)


def _loss_and_grads(
    rows: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int, scale: float,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor | None]]:
    """scale * summed loss and its gradients, accumulated in fp32 or wider; operands in one dtype."""
    eps = label_smoothing
    grad_rows = torch.empty_like(rows)
    acc = torch.promote_types(weight.dtype, torch.float32)  # bf16/fp16 products are summed in fp32
    grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
    grad_bias = None if bias is None else torch.zeros(bias.shape, dtype=acc, device=bias.device)
    total = torch.zeros((), dtype=acc, device=rows.device)
    for start in range(0, rows.shape[0], chunk_size):
        h, t = rows[start:start + chunk_size], targets[start:start + chunk_size]
        logits = F.linear(h, weight, bias).to(acc)  # (c, V)
        log_probs = torch.log_softmax(logits, dim=-1, out=logits)
        total += log_probs.gather(1, t[:, None]).sum().neg() * (1.0 - eps)
        if eps:
            total += log_probs.mean(dim=1).sum().neg() * eps
        grad = log_probs.exp_()  # d(loss)/d(logits) = softmax - smoothed one_hot(target), in place
        grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0 - eps
        if eps:
            grad -= eps / grad.shape[1]
        grad = grad.to(weight.dtype)
        torch.matmul(grad, weight, out=grad_rows[start:start + chunk_size])
        h = h * scale  # the loss scale, applied to the small operand
        if weight.dtype == acc:
            grad_weight.addmm_(grad.t(), h)
        else:
            grad_weight += grad.t() @ h
        if grad_bias is not None:
            grad_bias += grad.sum(0, dtype=acc)
    if grad_bias is not None:
        grad_bias.mul_(scale)
    return total * scale, (grad_rows.mul_(scale), grad_weight, grad_bias)


def logits_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of logits (..., V) in float32 over labels (...) that are not -100: the
    loss of every path that keeps its logits (plain forward, explicit path, single-model LMs)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
                           label_smoothing=label_smoothing)

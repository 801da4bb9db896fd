"""This process's rank and the world size under torch.distributed (0 and 1 when it is not running)."""

from __future__ import annotations


def rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist  # here, not at the top: base stays importable without torch

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1

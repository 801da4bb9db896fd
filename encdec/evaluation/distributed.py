"""`evaluate.py devices=N`: N processes on one machine share a split. Each rank generates every N-th
pending example into its own fsynced shard (predictions.rankR.jsonl); rank 0 merges the shards into
predictions.jsonl in split order and scores, so metrics.json equals a one-process run. A kill of any
rank loses only the lines being written: the next run (with any number of devices) reads every
shard and skips what they hold.

The processes talk through torch.distributed (gloo on CPU, nccl on CUDA), started here with the
`spawn` method; the launcher itself loads no model.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from encdec.base.errors import UsageError, one_line
from encdec.base.ranks import rank_and_world

WAIT = timedelta(hours=12)  # a rank waits this long for the slowest one (its share can be long)


def barrier() -> None:
    if rank_and_world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def share_problem(problem: str | None) -> None:
    """Rank 0's verdict (None: fine) raised as the same UsageError on every rank."""
    if rank_and_world()[1] > 1:
        import torch.distributed as dist

        box = [problem]
        dist.broadcast_object_list(box, src=0)
        problem = box[0]
    if problem:
        raise UsageError(problem)


def device_of_rank(device: str, rank: int, world: int) -> str:
    if world == 1 or device == "cpu":
        return device
    if device in ("cuda", "cuda:0"):
        return f"cuda:{rank}"
    raise UsageError(f"device={device!r} with devices={world}: use device=cuda (rank r takes cuda:r) or device=cpu.")


def launch(cfg: DictConfig, job: Callable[[DictConfig], Any]) -> Any:
    """Run job(cfg) on cfg.devices processes; returns rank 0's result. A failing rank stops the
    others; its error comes back as one line (a UsageError if it was one)."""
    import torch.multiprocessing as mp

    world = int(cfg.devices)
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    plain.output_dir = str(cfg.output_dir)  # ${hydra:...} resolves only here, not in the children
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    port = _free_port()
    ranks = [context.Process(target=_rank_main, args=(r, world, port, plain, job, results)) for r in range(world)]
    for process in ranks:
        process.start()
    stopped = _wait(ranks)
    messages = []
    while not results.empty():
        messages.append(results.get())
    errors = {m[1]: m[2:] for m in messages if m[0] == "error"}  # rank -> (is a UsageError, message)
    usage = [text for is_usage, text in errors.values() if is_usage]
    if usage:
        raise UsageError(usage[0])
    died = [(r, p.exitcode) for r, p in enumerate(ranks) if p.exitcode != 0 and r not in errors and r not in stopped]
    if died:  # a killed rank: the others' errors only echo its loss
        rank, code = died[0]
        raise RuntimeError(
            f"evaluate.py rank {rank} died (exit code {code}). Run the same command again: the "
            "predictions already written are kept and skipped."
        )
    if errors:
        raise RuntimeError(next(iter(errors.values()))[1])
    return next(m[1] for m in messages if m[0] == "result")


def _wait(ranks: list) -> set[int]:
    """Join all; the first rank that exits with an error makes the others stop (they would wait
    for it forever at the next barrier). Returns the ranks stopped that way."""
    stopped: set[int] = set()
    while any(p.is_alive() for p in ranks):
        for process in ranks:
            process.join(timeout=0.2)
            if process.exitcode not in (None, 0):
                for rank, other in enumerate(ranks):
                    if other.is_alive():
                        other.terminate()
                        stopped.add(rank)
    for process in ranks:
        process.join()
    return stopped


def _rank_main(rank: int, world: int, port: int, cfg: DictConfig, job: Callable, results: Any) -> None:
    import torch
    import torch.distributed as dist


    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    cuda = str(cfg.device).startswith("cuda")
    if not cuda:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world, timeout=WAIT)
    try:
        result = job(cfg)
        if rank == 0:
            results.put(("result", result))
    except Exception as exc:  # noqa: BLE001 - reported to the launcher, which raises it as one line
        results.put(("error", rank, isinstance(exc, UsageError), one_line(exc)))
        raise SystemExit(2) from None
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


"""A one-line progress report on stderr for long generation jobs (the CLI, evaluate.py)."""

from __future__ import annotations

import sys
import time


class Progress:
    """One status line on stderr: done/total, examples/s, ETA."""

    def __init__(self, total: int, already: int) -> None:
        self.total, self.count, self.start_count = total, already, already
        self.start = time.perf_counter()

    def update(self, n: int) -> None:
        self.count += n
        rate = (self.count - self.start_count) / max(time.perf_counter() - self.start, 1e-9)
        eta = (self.total - self.count) / rate if rate else float("inf")
        sys.stderr.write(f"\r{self.count}/{self.total} examples | {rate:.2f} ex/s | ETA {eta:.0f}s ")
        sys.stderr.flush()

    def rate(self) -> float | None:
        done = self.count - self.start_count
        return done / (time.perf_counter() - self.start) if done else None

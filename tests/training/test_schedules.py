"""LR schedules against their formulas, hand-computed, and through the composed optim config."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from encdec.training import schedules


def lrs(schedule, steps: int, **kwargs) -> list[float]:
    """The LR each of the first `steps` optimizer steps uses, for a base LR of 1."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = schedule(opt, **kwargs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_warms_up_then_decays_to_zero():
    got = lrs(schedules.linear, 11, total_steps=10, warmup_steps=4)
    assert got[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert got[5:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])


def test_cosine_is_half_a_cosine_after_warmup():
    got = lrs(schedules.cosine, 11, total_steps=10, warmup_steps=2)
    assert got[:2] == pytest.approx([0.5, 1.0])
    # step s >= 2: 0.5 * (1 + cos(pi * (s - 2) / 8)); s = 6 is the half-way point
    assert got[2] == pytest.approx(1.0) and got[6] == pytest.approx(0.5) and got[10] == pytest.approx(0.0)
    assert got[4] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_constant_with_warmup_stays_at_the_base_lr():
    assert lrs(schedules.constant_with_warmup, 8, total_steps=8, warmup_steps=3) == pytest.approx(
        [1 / 3, 2 / 3, 1, 1, 1, 1, 1, 1])


def test_inverse_sqrt_is_fairseqs():
    got = lrs(schedules.inverse_sqrt, 16, total_steps=100, warmup_steps=4)
    assert got[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert got[7] == pytest.approx(math.sqrt(4 / 8)) and got[15] == pytest.approx(0.5)  # update 16: sqrt(4/16)
    with pytest.raises(ValueError, match="warmup_steps"):
        schedules.inverse_sqrt(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 10, warmup_steps=0)


@pytest.mark.parametrize("name, step, expected", [
    ("linear", 7, (10 - 7) / 8), ("cosine", 6, 0.5), ("constant_with_warmup", 7, 1.0),
    ("inverse_sqrt", 7, math.sqrt(2 / 8)),
])
def test_composed_config_builds_the_named_schedule(compose, name, step, expected):
    cfg = compose("~experiment", f"optim/scheduler={name}", "optim.warmup_steps=2")
    got = lrs(instantiate(cfg.optim.scheduler), step + 1, total_steps=10)
    assert got[0] == pytest.approx(0.5) and got[step] == pytest.approx(expected)

"""Warmup + cosine / linear / constant schedules against transformers' reference functions."""
from __future__ import annotations

import math

import pytest
import torch
import transformers

from mmlora.train import build_scheduler, lr_factor

REFERENCE = {"cosine": transformers.get_cosine_schedule_with_warmup,
             "linear": transformers.get_linear_schedule_with_warmup}


def _lrs(sched_factory, steps):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = sched_factory(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 20), (10, 37)])
def test_matches_transformers(kind, warmup, total):
    # steps 0..total (past the end transformers' cosine rises again; ours stays at the floor)
    ours = _lrs(lambda o: build_scheduler(o, total, warmup, kind), total + 1)
    ref = _lrs(lambda o: REFERENCE[kind](o, warmup, total), total + 1)
    assert ours == pytest.approx(ref, abs=1e-12)


def test_constant_with_warmup_matches_transformers():
    ours = _lrs(lambda o: build_scheduler(o, 20, 4, "constant"), 20)
    ref = _lrs(lambda o: transformers.get_constant_schedule_with_warmup(o, 4), 20)
    assert ours == pytest.approx(ref, abs=1e-12)


def test_known_values_and_floor():
    assert lr_factor(0, 100, 10) == 0.0
    assert lr_factor(5, 100, 10) == 0.5
    assert lr_factor(10, 100, 10) == 1.0
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)  # half way through the cosine
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(100, 100, 10, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, min_lr_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(1000, 100, 10) == pytest.approx(0.0, abs=1e-12)  # stays at the floor past the end
    assert lr_factor(30, 100, 0, "linear") == pytest.approx(0.7)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(50, 100, 0, "step")  # type: ignore[arg-type]


def test_state_dict_round_trip():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = build_scheduler(opt, 50, 5)
    for _ in range(17):
        opt.step()
        s.step()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s2 = build_scheduler(opt2, 50, 5)
    s2.load_state_dict(s.state_dict())
    opt2.param_groups[0]["lr"] = s2.get_last_lr()[0]
    for _ in range(5):
        opt.step(); s.step(); opt2.step(); s2.step()  # noqa: E702
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]
    assert math.isclose(opt.param_groups[0]["lr"], lr_factor(22, 50, 5))

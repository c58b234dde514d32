"""attnlib.train.schedules: warm-up schedules, the Transformer paper's values at known steps."""

import math

import pytest
import torch
from torch import nn

from attnlib import train
from attnlib.train import linear_warmup, transformer_lr, transformer_schedule


def rates(scheduler, optimizer, steps):
    """The learning rate each of the first ``steps`` optimiser steps uses."""
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def adam(lr=1e-3):
    return torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=lr)


def test_transformer_lr_at_known_steps():
    # base model: d_model 512, 4000 warm-up steps; the peak is (512 * 4000) ** -0.5 = 6.99e-4 at step 4000
    assert transformer_lr(4000, d_model=512, warmup_steps=4000) == pytest.approx(6.9877e-4, rel=1e-4)
    assert transformer_lr(1, d_model=512, warmup_steps=4000) == pytest.approx(512**-0.5 * 4000**-1.5)
    assert transformer_lr(2000, d_model=512, warmup_steps=4000) == pytest.approx(0.5 * 6.9877e-4, rel=1e-4)
    assert transformer_lr(16000, d_model=512, warmup_steps=4000) == pytest.approx(0.5 * 6.9877e-4, rel=1e-4)
    values = [transformer_lr(s, d_model=64, warmup_steps=100) for s in range(1, 1000)]
    assert max(values) == values[99]  # the peak is at step = warmup_steps
    assert all(a < b for a, b in zip(values[:99], values[1:100]))  # rises, then falls
    assert all(a > b for a, b in zip(values[99:], values[100:]))


def test_transformer_schedule_gives_the_papers_values_whatever_the_optimizers_lr():
    optimizer = adam(lr=123.0)
    scheduler = transformer_schedule(optimizer, d_model=512, warmup_steps=10)
    seen = rates(scheduler, optimizer, 30)
    expected = [transformer_lr(s, d_model=512, warmup_steps=10) for s in range(1, 31)]
    assert seen == pytest.approx(expected)
    optimizer = adam()
    seen = rates(transformer_schedule(optimizer, d_model=512, warmup_steps=10, scale=2.0), optimizer, 3)
    assert seen == pytest.approx([2 * e for e in expected[:3]])


def test_linear_warmup_rises_then_holds_or_decays():
    optimizer = adam(lr=0.1)
    assert rates(linear_warmup(optimizer, 4), optimizer, 6) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    optimizer = adam(lr=0.1)
    seen = rates(linear_warmup(optimizer, 2, total_steps=6, decay="linear"), optimizer, 7)
    assert seen == pytest.approx([0.05, 0.1, 0.075, 0.05, 0.025, 0.0, 0.0])
    optimizer = adam(lr=0.1)
    seen = rates(linear_warmup(optimizer, 0, total_steps=4, decay="cosine"), optimizer, 5)
    assert seen == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * p)) for p in (0.25, 0.5, 0.75, 1.0, 1.0)])


def test_fit_steps_the_schedule_once_per_step():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = linear_warmup(optimizer, 10)
    batch = (torch.randn(4, 2), torch.randn(4, 1))
    train.fit(model, [batch], lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), optimizer=optimizer,
              max_steps=5, scheduler=scheduler, progress=False)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 6 / 10)  # ready for step 6


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: transformer_lr(0, d_model=512, warmup_steps=4000), ValueError, "step must be >= 1"),
    (lambda: transformer_lr(1.5, d_model=512, warmup_steps=4000), TypeError, "step must be an int"),
    (lambda: transformer_lr(1, d_model=512, warmup_steps=0), ValueError, "warmup_steps must be >= 1"),
    (lambda: transformer_schedule("adam", d_model=8, warmup_steps=1), TypeError, "torch.optim.Optimizer"),
    (lambda: transformer_schedule(adam(), d_model=8, warmup_steps=1, scale=0), ValueError, "scale"),
    (lambda: linear_warmup(adam(), -1), ValueError, "warmup_steps must be an int >= 0"),
    (lambda: linear_warmup(adam(), 2, decay="step"), ValueError, "decay must be one of"),
    (lambda: linear_warmup(adam(), 2, decay="cosine"), ValueError, "needs total_steps"),
    (lambda: linear_warmup(adam(), 5, total_steps=5, decay="linear"), ValueError, "larger than warmup_steps"),
])
def test_bad_arguments_are_explained(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()

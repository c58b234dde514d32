"""Learning-rate schedules with warm-up (lessons 08 and 09).

A freshly initialised Transformer, post-norm above all, can be thrown off course by its
first few large steps: Adam's running estimates of the gradients' size are still poor,
and a layer that moves too far too soon may never recover. *Warm-up* starts the step
size near zero and raises it over the first ``warmup_steps`` steps.

* :func:`transformer_lr`: the schedule of "Attention Is All You Need" (section 5.3),
  ``lr = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)``: a linear rise for
  ``warmup`` steps, then a decay with the inverse square root of the step;
* :func:`transformer_schedule`: that schedule as a ``torch.optim`` scheduler;
* :func:`linear_warmup`: a linear rise to the optimiser's own learning rate, then
  constant, or a linear or cosine decay to zero by ``total_steps``.

Both schedulers are stepped once after every optimiser step, as :func:`attnlib.train.fit`
does: the first optimiser step uses step 1.
"""

from __future__ import annotations

import math

import torch

_DECAYS = ("constant", "linear", "cosine")


def transformer_lr(step: int, *, d_model: int, warmup_steps: int) -> float:
    """The paper's learning rate at ``step`` (from 1): ``d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)``.

    It rises linearly to its peak ``(d_model · warmup_steps)^-0.5`` at ``step = warmup_steps``,
    then falls like ``1/√step``.
    """
    _require_positive_int(step, "step")
    _require_positive_int(d_model, "d_model")
    _require_positive_int(warmup_steps, "warmup_steps")
    return d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def transformer_schedule(optimizer: torch.optim.Optimizer, *, d_model: int, warmup_steps: int,
                         scale: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Set each of the optimiser's learning rates to ``scale · transformer_lr(step)``, step by step.

    The optimiser's own ``lr`` is replaced (not multiplied), so the paper's values come out
    whatever it was created with; ``scale`` multiplies them (the paper uses 1).
    """
    _require_optimizer(optimizer)
    transformer_lr(1, d_model=d_model, warmup_steps=warmup_steps)  # checks the arguments
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = 1.0  # LambdaLR multiplies this by the factor below
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: scale * transformer_lr(i + 1, d_model=d_model, warmup_steps=warmup_steps))


def linear_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, *, total_steps: int | None = None,
                  decay: str = "constant") -> torch.optim.lr_scheduler.LambdaLR:
    """Rise linearly to the optimiser's ``lr`` over ``warmup_steps`` steps, then hold or decay it.

    Step s (from 1) gets ``lr · s / warmup_steps`` while ``s <= warmup_steps``; after that
    ``lr`` itself (``decay="constant"``), or a ``"linear"`` or ``"cosine"`` decay that
    reaches 0 at ``total_steps``. ``warmup_steps=0`` means no warm-up.
    """
    _require_optimizer(optimizer)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if decay not in _DECAYS:
        raise ValueError(f"decay must be one of {_DECAYS}, got {decay!r}")
    if decay != "constant":
        if total_steps is None:
            raise ValueError(f"decay={decay!r} needs total_steps, the step at which the rate reaches 0")
        _require_positive_int(total_steps, "total_steps")
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must be larger than warmup_steps ({warmup_steps})")

    def factor(i: int) -> float:
        step = i + 1  # LambdaLR counts from 0; the first optimiser step is step 1
        if step <= warmup_steps:
            return step / warmup_steps
        if decay == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))  # 0 -> 1 after the warm-up
        return 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _require_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _require_optimizer(optimizer) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")

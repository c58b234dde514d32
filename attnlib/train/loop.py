"""A small, complete training loop (lessons 03 onwards).

Every lesson that trains a model calls :func:`fit` with its model, its batches and a
loss function, so the lessons can spend their words on attention, not on boilerplate.
``fit`` does what a careful loop does:

* runs on the model's device (or the one you name), batches moved there for you;
* mixed precision on a GPU: bfloat16 where the GPU supports it, float16 with a
  gradient scaler otherwise (e.g. a T4); plain float32 on a CPU;
* clips the gradient norm, steps an optional learning-rate scheduler;
* stops after ``max_steps`` or ``max_seconds``, whichever comes first;
* shows a progress bar with the running loss and the latest evaluation;
* evaluates every ``eval_every`` steps;
* returns a :class:`History` that can plot itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

_PRECISIONS = ("auto", "bf16", "fp16", "none")


# ----- history --------------------------------------------------------------------------
@dataclass
class History:
    """What happened during :func:`fit`.

    ``steps[i]`` and ``losses[i]``: the step number (from 1) and its training loss;
    ``eval_steps`` and ``metrics[name]``: when ``evaluate`` ran and what it returned;
    ``seconds``: the wall-clock time of the run.
    """

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def final_loss(self, window: int = 20) -> float:
        """Mean training loss over the last ``window`` steps (less noisy than the last one)."""
        if not self.losses:
            raise ValueError("the history holds no steps yet")
        recent = self.losses[-window:]
        return sum(recent) / len(recent)

    def plot(self, ax=None, *, title: str = "Training loss", log_scale: bool = True):
        """Loss per step (faint) and its running mean; evaluation metrics on a second axis.

        Returns the loss ``Axes``.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(self.steps, self.losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss (per step)")
        window = max(1, len(self.losses) // 50)
        ax.plot(self.steps, _running_mean(self.losses, window), color="tab:blue", label=f"loss (mean of {window})")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        if log_scale and self.losses and min(self.losses) > 0:
            ax.set_yscale("log")
        lines, labels = ax.get_legend_handles_labels()
        if self.metrics:
            other = ax.twinx()
            for name, values in self.metrics.items():
                other.plot(self.eval_steps, values, marker="o", linestyle="--", label=name)
            other.set_ylabel("evaluation metric")
            if all(0.0 <= v <= 1.0 for values in self.metrics.values() for v in values):
                other.set_ylim(-0.02, 1.02)  # fractions (accuracies): show the whole range
            more_lines, more_labels = other.get_legend_handles_labels()
            lines, labels = lines + more_lines, labels + more_labels
        outside = 1.15 if self.metrics else 1.02  # right of the plot (and of the metric axis), never over a curve
        ax.legend(lines, labels, loc="upper left", bbox_to_anchor=(outside, 1.0), fontsize="small")
        return ax


def _running_mean(values: list[float], window: int) -> list[float]:
    means, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        means.append(total / min(i + 1, window))
    return means


# ----- the training loop ----------------------------------------------------------------
def fit(
    model: nn.Module,
    batches,
    loss_fn: Callable,
    *,
    optimizer: torch.optim.Optimizer,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    clip_grad_norm: float | None = 1.0,
    scheduler=None,
    evaluate: Callable[[nn.Module], dict] | None = None,
    eval_every: int = 100,
    device=None,
    mixed_precision: str = "auto",
    progress: bool = True,
    desc: str = "training",
) -> History:
    """Train ``model`` on ``batches`` until ``max_steps`` or ``max_seconds`` is reached.

    * ``batches``: a function returning a fresh iterable of batches (called again each
      time one runs out, e.g. ``attnlib.data.epochs(train, 64)``), or a re-iterable
      such as a list. Objects with a ``.to(device)`` method (tensors,
      :class:`attnlib.data.Batch`) and tuples/lists of them are moved to the device.
    * ``loss_fn(model, batch)`` returns the scalar loss to minimise.
    * ``evaluate(model)`` (optional) returns ``{name: number}``; it runs every
      ``eval_every`` steps and once at the end, in eval mode under ``torch.no_grad()``.
    * ``device``: where to train (the model is moved there); default: the model's own.
    * ``mixed_precision``: ``"auto"`` (bf16 on a GPU that supports it, fp16 with a
      gradient scaler on other GPUs, none on CPU/MPS), ``"bf16"``, ``"fp16"`` or ``"none"``.
    * ``clip_grad_norm``: largest allowed gradient norm, or None for no clipping.
    * ``scheduler``: stepped after every optimiser step.

    The model is left in training mode. Returns a :class:`History`. A loss that
    becomes NaN or infinite stops training with a ``FloatingPointError``.
    """
    _check_fit_arguments(model, loss_fn, optimizer, max_steps, max_seconds, clip_grad_norm, evaluate, eval_every)
    device = _model_device(model) if device is None else torch.device(device)
    model.to(device)
    precision = _resolve_precision(mixed_precision, device)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    next_epoch = _epoch_source(batches)

    history = History()
    # At most one redraw a second: a notebook (and nbval) chokes on a flood of widget messages.
    bar = tqdm(total=max_steps, desc=desc, disable=not progress, leave=True, mininterval=1.0)
    running = None  # exponential moving average of the loss, for the progress bar
    step = 0
    start = time.perf_counter()
    model.train()
    try:
        while not _done(step, max_steps, start, max_seconds):
            epoch_steps = 0
            for batch in next_epoch():
                epoch_steps += 1
                batch = _to_device(batch, device)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    loss = loss_fn(model, batch)  # scalar
                _check_loss(loss, step + 1)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)  # so clipping sees the true gradients
                else:
                    loss.backward()
                if clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)  # skipped if the fp16 gradients overflowed
                    scaler.update()
                else:
                    optimizer.step()
                if scheduler is not None:
                    scheduler.step()

                step += 1
                value = loss.item()
                history.steps.append(step)
                history.losses.append(value)
                running = value if running is None else 0.9 * running + 0.1 * value
                bar.update(1)
                if evaluate is not None and step % eval_every == 0:
                    _run_evaluation(model, evaluate, step, history)
                if step % 10 == 0 or step == 1 or step in history.eval_steps[-1:]:
                    bar.set_postfix(_postfix(running, history), refresh=False)
                if _done(step, max_steps, start, max_seconds):
                    break
            if epoch_steps == 0:
                raise ValueError(
                    "batches produced no batches; pass a function that returns a fresh iterable "
                    "each time (e.g. attnlib.data.epochs(dataset, batch_size)), not a one-shot iterator"
                )
        if evaluate is not None and (not history.eval_steps or history.eval_steps[-1] != step):
            _run_evaluation(model, evaluate, step, history)
            bar.set_postfix(_postfix(running, history), refresh=True)
    finally:
        history.seconds = time.perf_counter() - start
        bar.close()
    return history


def _done(step, max_steps, start, max_seconds) -> bool:
    if max_steps is not None and step >= max_steps:
        return True
    return max_seconds is not None and time.perf_counter() - start >= max_seconds


def _postfix(running_loss, history: History) -> dict[str, str]:
    """What the progress bar shows after its counter: running loss, latest metrics."""
    shown = {"loss": f"{running_loss:.4f}"}
    for name, values in history.metrics.items():
        shown[name] = f"{values[-1]:.4g}"
    return shown


def _run_evaluation(model, evaluate, step, history) -> None:
    model.eval()
    try:
        with torch.no_grad():
            results = evaluate(model)
    finally:
        model.train()
    if not isinstance(results, dict):
        raise TypeError(f"evaluate(model) must return a dict of {{name: number}}, got {type(results).__name__}")
    history.eval_steps.append(step)
    for name, value in results.items():
        number = float(value.item() if isinstance(value, torch.Tensor) else value)
        history.metrics.setdefault(name, []).append(number)


def _check_loss(loss, step: int) -> None:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn(model, batch) must return a scalar tensor (shape ()), got {shape}")
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(
            f"the loss became {loss.item()} at step {step}; try a smaller learning rate, "
            "clip_grad_norm, or mixed_precision='none'"
        )


def _to_device(batch, device):
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(item, device) for item in batch)
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch


def _epoch_source(batches) -> Callable[[], Iterable]:
    """A function that returns one pass over the data each time it is called."""
    if callable(batches):
        return batches
    try:
        iter(batches)
    except TypeError:
        raise TypeError(
            f"batches must be a function returning an iterable of batches, or an iterable, "
            f"got {type(batches).__name__}"
        ) from None
    return lambda: batches


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _resolve_precision(mixed_precision, device: torch.device) -> str:
    if mixed_precision not in _PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {_PRECISIONS}, got {mixed_precision!r}")
    if mixed_precision == "auto":
        if device.type != "cuda":
            return "none"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mixed_precision == "fp16" and device.type != "cuda":
        raise ValueError(f"mixed_precision='fp16' needs a CUDA device, but training runs on {device}")
    if mixed_precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("mixed_precision='bf16' is not supported by this GPU; use 'fp16' or 'auto'")
    if mixed_precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise ValueError(f"mixed_precision='bf16' needs a CUDA or CPU device, but training runs on {device}")
    return mixed_precision


def _check_fit_arguments(model, loss_fn, optimizer, max_steps, max_seconds, clip_grad_norm, evaluate, eval_every):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function loss_fn(model, batch) -> loss, got {type(loss_fn).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if max_steps is None and max_seconds is None:
        raise ValueError("give max_steps or max_seconds (or both), so that training knows when to stop")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be an int >= 1 or None, got {max_steps!r}")
    if max_seconds is not None and (not _is_number(max_seconds) or not max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
    if clip_grad_norm is not None and (not _is_number(clip_grad_norm) or not clip_grad_norm > 0):
        raise ValueError(f"clip_grad_norm must be a positive number or None, got {clip_grad_norm!r}")
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate must be a function evaluate(model) -> dict, got {type(evaluate).__name__}")
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every must be an int >= 1, got {eval_every!r}")


def _is_number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)

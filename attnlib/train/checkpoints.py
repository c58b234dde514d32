"""Checkpoints that survive a crash (lessons 03 onwards, and lesson 14's resumed runs).

:func:`save_checkpoint` writes to a temporary file and renames it over the old one,
so an interrupted save never leaves a half-written checkpoint behind;
:func:`load_checkpoint` reads with ``weights_only=True`` (no pickled code runs) and
explains what is wrong with a file it cannot use.
"""

from __future__ import annotations

import os
import tempfile

import torch
from torch import nn

_FORMAT = "attnlib-checkpoint"
_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: corrupt, not a checkpoint, or for another model."""


def save_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **extra) -> None:
    """Save the model's weights, the optimizer's state (optional) and ``extra`` values.

    ``extra`` holds plain data: numbers, strings, booleans, None, tensors, and
    lists/tuples/dicts of them (e.g. ``step=1200, config={"d_model": 64}``), so that
    loading never has to run pickled code. The file is written next to ``path`` under
    a temporary name and renamed over ``path`` only when complete: a crash mid-save
    leaves the previous checkpoint intact.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    for name, value in extra.items():
        _check_plain(value, name)
    payload = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "model_class": type(model).__name__,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "extra": extra,
    }
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)  # atomic: readers see the old file or the new one
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``).

    Returns the ``extra`` values saved with it (tensors on the CPU). The file is read
    with ``torch.load(..., weights_only=True)``, which cannot run code. Raises
    ``FileNotFoundError`` if there is no file, and :class:`CheckpointError` if the file
    is corrupt or truncated, is not a checkpoint, or does not fit ``model`` (names or
    shapes of weights differ) or ``optimizer``; the model is left unchanged then.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint (is it corrupt or truncated?): {type(error).__name__}: {error}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a checkpoint written by attnlib.train.save_checkpoint")
    if payload.get("version") != _FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('version')!r}; this attnlib reads version {_FORMAT_VERSION}"
        )

    if not isinstance(payload.get("model"), dict) or "extra" not in payload or "optimizer" not in payload:
        raise CheckpointError(f"{path} is damaged: it lacks the model weights, optimizer or extra entries")
    saved_class = payload.get("model_class", "?")
    problems = _state_dict_mismatch(payload["model"], model.state_dict())
    if problems:
        raise CheckpointError(
            f"{path} holds weights of a {saved_class} that does not fit this {type(model).__name__}: "
            + "; ".join(problems)
        )
    if optimizer is not None:
        if payload["optimizer"] is None:
            raise CheckpointError(f"{path} holds no optimizer state (it was saved without an optimizer)")
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"{path} holds optimizer state that does not fit this optimizer: {error}") from error
    model.load_state_dict(payload["model"])
    return dict(payload["extra"])


def _state_dict_mismatch(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two state dicts (names and shapes)."""
    problems = []
    missing = [name for name in current if name not in saved]
    unexpected = [name for name in saved if name not in current]
    if missing:
        problems.append(f"missing in the file: {_few(missing)}")
    if unexpected:
        problems.append(f"in the file but not in the model: {_few(unexpected)}")
    for name in current:
        if name in saved and tuple(getattr(saved[name], "shape", ())) != tuple(getattr(current[name], "shape", ())):
            problems.append(
                f"{name} has shape {tuple(saved[name].shape)} in the file but {tuple(current[name].shape)} in the model"
            )
    return problems


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_plain(value, name: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{name}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"extra value {name} has a key of type {type(key).__name__}; use str or int keys")
            _check_plain(item, f"{name}[{key!r}]")
        return
    raise TypeError(
        f"extra value {name} is a {type(value).__name__}; a checkpoint stores numbers, strings, booleans, None, "
        "tensors, and lists/tuples/dicts of them (convert it first, e.g. to a list or a tensor)"
    )

"""Where the course runs: picking a device, seeding, and saying what is in use.

Every notebook calls these three in its setup cell, so a lesson runs unchanged on a
laptop CPU, an Apple GPU (mps) or a CUDA GPU such as Colab's T4.
"""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

_VALID_KINDS = ("cpu", "cuda", "mps")


def get_device() -> torch.device:
    """Return the device lessons should use.

    The ``ATTNLIB_DEVICE`` environment variable wins when set (``cpu``, ``cuda``,
    ``cuda:1``, ``mps``); otherwise CUDA if available, then Apple's MPS, then the CPU.
    """
    wanted = os.environ.get("ATTNLIB_DEVICE", "").strip()
    if wanted:
        kind = wanted.split(":")[0]
        if kind not in _VALID_KINDS:
            raise ValueError(
                f"ATTNLIB_DEVICE={wanted!r} is not a device; expected one of "
                f"{', '.join(_VALID_KINDS)} (optionally with an index, e.g. 'cuda:1')"
            )
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices) with ``seed``.

    Results on a CPU may still differ slightly between thread counts, which is why
    every assertion in the course allows a margin.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def describe_environment(device: torch.device | None = None) -> str:
    """One line naming the device and the versions in use, for the setup cell."""
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        where = device.type
    return (
        f"device: {where} | torch {torch.__version__} | numpy {np.__version__} "
        f"| python {platform.python_version()}"
    )

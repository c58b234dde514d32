"""Input checks shared by attnlib's public functions.

Each helper raises a ``TypeError`` or ``ValueError`` whose message names the argument,
what it got and what was expected, so a learner never meets a cryptic error deep
inside torch.
"""

from __future__ import annotations

import torch


def require_tensor(x, name: str) -> torch.Tensor:
    """``x`` must be a ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_float(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` must hold floating-point numbers."""
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def require_min_dims(x: torch.Tensor, name: str, dims: int, layout: str) -> torch.Tensor:
    """``x`` must have at least ``dims`` dimensions, described by ``layout``."""
    if x.dim() < dims:
        raise ValueError(
            f"{name} must have shape {layout} (at least {dims} dimensions), "
            f"got shape {tuple(x.shape)}"
        )
    return x


def check_mask(mask, target_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A mask must be a boolean tensor (True = may attend) broadcastable to ``target_shape``."""
    require_tensor(mask, "mask")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must be a boolean tensor (True = may attend), got dtype {mask.dtype}; "
            "convert it with mask.bool() or build it with a comparison"
        )
    try:
        torch.broadcast_shapes(tuple(mask.shape), target_shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} cannot be broadcast to the scores' "
            f"shape {target_shape} (..., Lq, Lk)"
        ) from None
    if torch.broadcast_shapes(tuple(mask.shape), target_shape) != target_shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} would enlarge the scores' shape "
            f"{target_shape} (..., Lq, Lk); it must broadcast to it, not beyond"
        )
    if mask.device != device:
        raise ValueError(f"mask is on {mask.device} but the scores are on {device}")
    return mask


def autocast_enabled(device_type: str) -> bool:
    """True inside ``torch.autocast`` for this device (where mixed dtypes are expected)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # an older torch without the device argument: do not block
        return True

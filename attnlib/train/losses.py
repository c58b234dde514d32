"""Label-smoothed cross-entropy (lesson 09), the loss the Transformer paper trains with.

Plain cross-entropy asks the model to put probability 1 on the right token, which it can
only approach by making its logits ever larger: it grows over-confident. *Label
smoothing* (Szegedy et al. 2016; the paper's section 5.4, with ε = 0.1) trains towards a
softened target instead, ``q = (1 - ε)·one_hot(y) + ε/V`` over the V classes:

    loss = -Σ_v q_v log p_v = (1 - ε)·(-log p_y) + ε·mean_v(-log p_v)

the usual negative log-likelihood plus ε times the average over *all* classes, the right
one included, as ``torch.nn.functional.cross_entropy(label_smoothing=ε)`` defines it.
Positions whose target is ``ignore_index`` (padding) count for nothing.
"""

from __future__ import annotations

import torch

from ..data.examples import PAD

_REDUCTIONS = ("mean", "sum", "none")


def label_smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, smoothing: float = 0.1,
                                 ignore_index: int = PAD, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits`` (..., V) against ``targets`` (...) with label smoothing ``smoothing``.

    Equal to ``F.cross_entropy(logits.flatten(0, -2), targets.flatten(), label_smoothing=
    smoothing, ignore_index=ignore_index, reduction=reduction)`` (reshaped back for
    ``"none"``, which gives 0 at ignored positions). ``"mean"`` averages over the positions
    that are not ignored (NaN when every position is, as torch gives).
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point torch.Tensor (..., V), got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(f"targets must be a torch.Tensor of class ids (torch.long), got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if logits.dim() < 1 or tuple(logits.shape[:-1]) != tuple(targets.shape):
        raise ValueError(f"logits (..., V) and targets (...) must share their leading shape: got logits "
                         f"{tuple(logits.shape)} and targets {tuple(targets.shape)}")
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be a number in [0, 1], got {smoothing!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    keep = targets != ignore_index  # (...): positions that count
    vocab = logits.shape[-1]
    if keep.any() and (targets[keep].min() < 0 or targets[keep].max() >= vocab):
        raise ValueError(f"targets must be class ids in [0, {vocab}) (or ignore_index={ignore_index}), got "
                         f"values from {targets[keep].min().item()} to {targets[keep].max().item()}")

    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (..., V)
    safe = torch.where(keep, targets, 0)  # (...): any valid id where ignored
    nll = -log_probs.gather(-1, safe[..., None])[..., 0]  # (...): -log p_y
    uniform = -log_probs.mean(dim=-1)  # (...): mean_v(-log p_v), the cross-entropy with the uniform ε part
    loss = ((1.0 - smoothing) * nll + smoothing * uniform) * keep  # (...), 0 where ignored
    loss = loss.to(logits.dtype)  # (...)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / keep.sum()  # mean over the positions that count

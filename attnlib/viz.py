"""Pictures of attention: a heatmap of who attends to whom."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def plot_attention(
    weights,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ax=None,
    title: str = "Attention weights",
    xlabel: str = "key (attended to)",
    ylabel: str = "query (attending)",
    cmap: str = "viridis",
    colorbar: bool = True,
    vmax: float | None = 1.0,
):
    """Draw attention weights ``(Lq, Lk)`` as a heatmap: row i shows where query i looks.

    ``weights`` is a tensor or array of shape ``(Lq, Lk)`` (a leading dimension of size
    one is squeezed away). Labels, when given, name the rows (queries) and columns
    (keys). Returns the matplotlib ``Axes`` so callers can add to it.

    The colour scale is fixed from 0 to ``vmax`` = 1 by default, the range of any
    attention weight, so that panels side by side compare: an untrained model's spread-out
    weights look faint next to a trained model's sharp ones. Pass ``vmax=None`` to scale
    to the largest weight shown instead (for scores or other quantities).
    """
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().float().cpu().numpy()
    array = np.asarray(weights, dtype=float)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]  # (Lq, Lk)
    if array.ndim != 2:
        raise ValueError(f"weights must have shape (Lq, Lk), got shape {tuple(np.shape(weights))}")
    lq, lk = array.shape
    for name, labels, size in (("query_labels", query_labels, lq), ("key_labels", key_labels, lk)):
        if labels is not None and len(labels) != size:
            raise ValueError(f"{name} has {len(labels)} entries but the weights have {size} along that axis")

    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.45 * max(lk, 4), 0.8 + 0.45 * max(lq, 4)))
    top = max(1e-9, float(array.max())) if vmax is None else vmax
    image = ax.imshow(array, cmap=cmap, vmin=0.0, vmax=top, aspect="auto")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(lk))
    ax.set_yticks(range(lq))
    if key_labels is not None:
        ax.set_xticklabels([str(s) for s in key_labels], rotation=90 if lk > 12 else 0)
    if query_labels is not None:
        ax.set_yticklabels([str(s) for s in query_labels])
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="weight")
    return ax

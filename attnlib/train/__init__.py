"""Training: the loop every lesson calls, and checkpoints.

* :mod:`~attnlib.train.loop`: :func:`fit` and the :class:`History` it returns;
* :mod:`~attnlib.train.checkpoints`: atomic :func:`save_checkpoint` and a
  :func:`load_checkpoint` that explains what is wrong with a file;
* :mod:`~attnlib.train.schedules`: learning rates with warm-up (:func:`linear_warmup`,
  and the Transformer paper's :func:`transformer_lr` / :func:`transformer_schedule`);
* :mod:`~attnlib.train.losses`: :func:`label_smoothed_cross_entropy`, the paper's loss.

Everything is importable from ``attnlib.train`` directly, e.g. ``train.fit``.
"""

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .loop import History, fit
from .losses import label_smoothed_cross_entropy
from .schedules import linear_warmup, transformer_lr, transformer_schedule

__all__ = ["CheckpointError", "History", "fit", "label_smoothed_cross_entropy", "linear_warmup", "load_checkpoint",
           "save_checkpoint", "transformer_lr", "transformer_schedule"]

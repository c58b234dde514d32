"""Training: the loop every lesson calls, and checkpoints.

* :mod:`~attnlib.train.loop`: :func:`fit` and the :class:`History` it returns;
* :mod:`~attnlib.train.checkpoints`: atomic :func:`save_checkpoint` and a
  :func:`load_checkpoint` that explains what is wrong with a file.

Everything is importable from ``attnlib.train`` directly, e.g. ``train.fit``.
"""

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .loop import History, fit

__all__ = ["CheckpointError", "History", "fit", "load_checkpoint", "save_checkpoint"]

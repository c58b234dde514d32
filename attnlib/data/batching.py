"""Padded batches of examples, and epochs of them for the training loop.

A batch pads its sequences to a common length with ``PAD`` and says which positions
are real with boolean masks (True = real token), the shape every model of the course
reads: ``(B, S)`` sources, ``(B, T)`` targets.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .examples import BOS, EOS, PAD, Example, SequenceDataset, _require_int, _require_seed


# ----- batches --------------------------------------------------------------------------
@dataclass
class Batch:
    """Padded tensors for a batch of examples, ready for an encoder–decoder.

    * ``source`` ``(B, S)`` long: the source tokens, PAD after the end;
    * ``source_mask`` ``(B, S)`` bool: True where ``source`` holds a real token;
    * ``target_input`` ``(B, T)`` long: ``BOS`` + target, what the decoder reads;
    * ``target_output`` ``(B, T)`` long: target + ``EOS``, what it must predict;
    * ``target_mask`` ``(B, T)`` bool: True where ``target_output`` is real (count
      the loss there only).
    """

    source: torch.Tensor
    source_mask: torch.Tensor
    target_input: torch.Tensor
    target_output: torch.Tensor
    target_mask: torch.Tensor

    def __len__(self) -> int:
        return self.source.shape[0]

    @property
    def source_lengths(self) -> torch.Tensor:
        """Number of real tokens in each source, ``(B,)`` long."""
        return self.source_mask.sum(dim=1)  # (B,)

    def to(self, device) -> "Batch":
        """The same batch with every tensor on ``device``."""
        return Batch(
            self.source.to(device),  # (B, S)
            self.source_mask.to(device),  # (B, S)
            self.target_input.to(device),  # (B, T)
            self.target_output.to(device),  # (B, T)
            self.target_mask.to(device),  # (B, T)
        )


def collate(examples: Sequence[Example]) -> Batch:
    """Pad a list of examples into one :class:`Batch` (see its fields for the layout)."""
    if isinstance(examples, Example) or not isinstance(examples, Sequence):
        raise TypeError(f"examples must be a sequence (list, tuple) of Example, got {type(examples).__name__}")
    if len(examples) == 0:
        raise ValueError("cannot collate an empty list of examples")
    for index, example in enumerate(examples):
        if not isinstance(example, Example):
            raise TypeError(f"examples[{index}] must be an Example, got {type(example).__name__}")

    source_len = max(len(e.source) for e in examples)
    target_len = max(len(e.target) for e in examples) + 1  # room for BOS (input) / EOS (output)
    sources = [list(e.source) + [PAD] * (source_len - len(e.source)) for e in examples]
    inputs = [[BOS, *e.target] + [PAD] * (target_len - 1 - len(e.target)) for e in examples]
    outputs = [[*e.target, EOS] + [PAD] * (target_len - 1 - len(e.target)) for e in examples]

    source = torch.tensor(sources, dtype=torch.long)  # (B, S)
    target_input = torch.tensor(inputs, dtype=torch.long)  # (B, T)
    target_output = torch.tensor(outputs, dtype=torch.long)  # (B, T)
    source_lengths = torch.tensor([len(e.source) for e in examples])  # (B,)
    target_lengths = torch.tensor([len(e.target) + 1 for e in examples])  # (B,), EOS included
    source_mask = torch.arange(source_len) < source_lengths[:, None]  # (B, S), True = real token
    target_mask = torch.arange(target_len) < target_lengths[:, None]  # (B, T), True = real token
    return Batch(source, source_mask, target_input, target_output, target_mask)


def batches(
    dataset: SequenceDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    device=None,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """One pass over ``dataset`` in batches of ``batch_size`` (the last may be smaller).

    ``shuffle=True`` visits the examples in an order fixed by ``seed``; ``device``
    moves each batch there; ``drop_last=True`` skips a final, smaller batch.
    """
    if not isinstance(dataset, SequenceDataset):
        raise TypeError(f"dataset must be a SequenceDataset, got {type(dataset).__name__}")
    _require_int(batch_size, "batch_size", 1)
    _require_seed(seed)
    order = list(range(len(dataset)))
    if shuffle:
        random.Random(seed).shuffle(order)
    return _batch_iterator(dataset, order, batch_size, device, drop_last)


def epochs(
    dataset: SequenceDataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    device=None,
    drop_last: bool = False,
) -> Callable[[], Iterator[Batch]]:
    """A function that returns one more pass over ``dataset`` each time it is called.

    Made for :func:`attnlib.train.fit`, which calls it at every epoch: pass number
    ``e`` (from 0) is shuffled with seed ``seed + e``, so each epoch has a fresh order
    and the whole run is still reproducible.
    """
    batches(dataset, batch_size, shuffle=shuffle, seed=seed, device=device, drop_last=drop_last)  # checks
    counter = itertools.count()

    def next_epoch() -> Iterator[Batch]:
        return batches(
            dataset, batch_size, shuffle=shuffle, seed=seed + next(counter), device=device, drop_last=drop_last
        )

    return next_epoch


def _batch_iterator(dataset, order, batch_size, device, drop_last):
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        if drop_last and len(chosen) < batch_size:
            return
        batch = collate([dataset.examples[i] for i in chosen])
        yield batch.to(device) if device is not None else batch

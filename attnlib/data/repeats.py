"""Random tokens that repeat (lesson 13): the task on which induction heads form.

Each sequence is a block of ``period`` distinct random tokens written over and over until
the sequence is ``length`` tokens long::

    period 4:  q 7 c k q 7 c k q 7 c ...        tokens[t] = block[t mod period]

The first pass through the block is unpredictable: every token is new, drawn at random.
From position ``period`` on, every token repeats the one ``period`` positions back, so a
model that finds where the current token occurred before and reads the token that followed
it there predicts the next token exactly. That lookup is an **induction head** (Olsson et
al. 2022). The period is drawn per sequence, uniformly from ``min_period .. max_period``,
so that "copy the token so many positions back" (which one layer could learn from positions
alone) does not work: the model has to find the earlier occurrence by its content.

There is no padding (every sequence has the same length) and so no special tokens: the
tokens are ``0 .. vocab_size - 1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .examples import _require_int, _require_seed


@dataclass(frozen=True)
class RepeatedTokens:
    """``N`` sequences of repeated random tokens.

    * ``tokens``: ``(N, T)`` int64 in ``[0, vocab_size)``, ``tokens[n, t] = tokens[n, t - periods[n]]``
      for ``t >= periods[n]``; the first ``periods[n]`` tokens of a sequence are distinct;
    * ``periods``: ``(N,)`` int64, each sequence's period;
    * ``vocab_size``: the number of token ids.

    ``data.repeats`` ``(N, T)`` says which positions hold a repeat (``t >= period``).
    Slicing (``data[:64]``) gives another :class:`RepeatedTokens`; ``.to(device)`` moves it,
    so :func:`attnlib.train.fit` can take batches of it (see :meth:`batches`).
    """

    tokens: torch.Tensor
    periods: torch.Tensor
    vocab_size: int

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index) -> "RepeatedTokens":
        if not isinstance(index, slice):
            raise TypeError(f"index RepeatedTokens with a slice (e.g. data[:64]), got {type(index).__name__}")
        return RepeatedTokens(self.tokens[index], self.periods[index], self.vocab_size)

    @property
    def length(self) -> int:
        """T, the number of tokens in every sequence."""
        return self.tokens.shape[1]

    @property
    def repeats(self) -> torch.Tensor:
        """``(N, T)`` bool: position t holds a repeat of position t - period (True from t = period on)."""
        positions = torch.arange(self.length, device=self.tokens.device)  # (T,)
        return positions[None, :] >= self.periods[:, None]  # (N, T)

    def to(self, device) -> "RepeatedTokens":
        return RepeatedTokens(self.tokens.to(device), self.periods.to(device), self.vocab_size)

    def batches(self, batch_size: int) -> Iterator["RepeatedTokens"]:
        """One pass over the sequences in order, ``batch_size`` at a time (the last may be smaller).

        For :func:`attnlib.train.fit`: ``fit(model, lambda: data.batches(64), ...)``.
        """
        _require_int(batch_size, "batch_size", 1)
        return (self[start : start + batch_size] for start in range(0, len(self), batch_size))


def repeated_tokens(
    num_sequences: int,
    *,
    length: int,
    vocab_size: int,
    min_period: int,
    max_period: int,
    seed: int = 0,
) -> RepeatedTokens:
    """``num_sequences`` sequences of ``length`` tokens: a random block of distinct tokens, repeated.

    Sequence n draws its period ``P`` uniformly from ``min_period .. max_period`` (both
    included) and a block of ``P`` distinct tokens uniformly from ``0 .. vocab_size - 1``;
    then ``tokens[n, t] = block[t mod P]``. ``length >= max_period + 2``, so that every
    sequence has at least one token that can be predicted from an earlier occurrence of the
    one before it. The same ``seed`` gives the same sequences.
    """
    _require_int(num_sequences, "num_sequences", 1)
    _require_int(vocab_size, "vocab_size", 2)
    _require_int(min_period, "min_period", 2)
    _require_int(max_period, "max_period", min_period)
    _require_int(length, "length", 3)
    _require_seed(seed)
    if max_period > vocab_size:
        raise ValueError(f"max_period={max_period} needs that many distinct tokens per block, but vocab_size="
                         f"{vocab_size}; use max_period <= vocab_size")
    if length < max_period + 2:
        raise ValueError(f"length={length} is too short for max_period={max_period}: a sequence needs at least "
                         f"max_period + 2 = {max_period + 2} tokens to hold a predictable repeat")
    generator = torch.Generator().manual_seed(seed)
    periods = torch.randint(min_period, max_period + 1, (num_sequences,), generator=generator)  # (N,)
    shuffled = torch.rand(num_sequences, vocab_size, generator=generator).argsort(dim=1)  # (N, V): permutations
    blocks = shuffled[:, :max_period]  # (N, max_period): distinct tokens; sequence n uses the first P_n
    where = torch.arange(length)[None, :] % periods[:, None]  # (N, T): t mod P_n
    tokens = blocks.gather(1, where)  # (N, T)
    return RepeatedTokens(tokens, periods, vocab_size)

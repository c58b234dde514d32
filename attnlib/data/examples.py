"""Token ids, examples and datasets: the common ground of every synthetic task.

Tokens are integers. Three are special: ``PAD`` fills the end of short sequences in a
batch, ``BOS`` starts the decoder's input, ``EOS`` ends its output. Symbol ``i`` of a
task is token ``NUM_SPECIAL + i``. An :class:`Example` is one source/target pair of
symbol tokens; a :class:`SequenceDataset` is a named list of them with its vocabulary
size. The examples of one dataset are distinct, so that :func:`split_dataset` can keep
every source sequence in exactly one split (a test example the model has memorised
tests nothing).
"""

from __future__ import annotations

import math
import operator
import random
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

PAD = 0
BOS = 1
EOS = 2
NUM_SPECIAL = 3

SPECIAL_NAMES = {PAD: "·", BOS: "<bos>", EOS: "<eos>"}


# ----- examples and datasets -----------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """One input/output pair of token ids (symbols only: no PAD, BOS or EOS inside).

    Lists are accepted and stored as tuples, so examples are hashable and can be
    compared, which is how splits are kept disjoint.
    """

    source: tuple[int, ...]
    target: tuple[int, ...]

    def __post_init__(self):
        for name in ("source", "target"):
            tokens = _as_token_tuple(getattr(self, name), name)
            if not tokens:
                raise ValueError(f"Example.{name} must hold at least one token, got an empty sequence")
            special = [t for t in tokens if t < NUM_SPECIAL]
            if special:
                raise ValueError(
                    f"Example.{name} must hold symbol tokens (ids >= {NUM_SPECIAL}); got {special[0]}, "
                    f"a special token (PAD={PAD}, BOS={BOS}, EOS={EOS}) that batching adds itself"
                )
            object.__setattr__(self, name, tokens)


@dataclass
class SequenceDataset:
    """A named list of :class:`Example` and the vocabulary size that covers all tokens.

    ``symbol_names`` (optional) names symbol 0, 1, 2, ... for :meth:`to_text`.
    """

    name: str
    examples: list[Example]
    vocab_size: int
    symbol_names: tuple[str, ...] | None = None

    def __post_init__(self):
        _require_int(self.vocab_size, "vocab_size", NUM_SPECIAL + 1)
        for index, example in enumerate(self.examples):
            if not isinstance(example, Example):
                raise TypeError(f"examples[{index}] must be an Example, got {type(example).__name__}")
            largest = max(max(example.source), max(example.target))
            if largest >= self.vocab_size:
                raise ValueError(
                    f"examples[{index}] holds token {largest}, outside the vocabulary "
                    f"[0, {self.vocab_size}) given by vocab_size={self.vocab_size}"
                )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def source_lengths(self) -> list[int]:
        """The length of every source sequence, in order."""
        return [len(example.source) for example in self.examples]

    def target_lengths(self) -> list[int]:
        """The length of every target sequence, in order."""
        return [len(example.target) for example in self.examples]

    def to_text(self, tokens, *, skip_padding: bool = True) -> str:
        """Tokens as readable text, using this dataset's symbol names (see :func:`to_text`)."""
        return to_text(tokens, self.symbol_names, skip_padding=skip_padding)



def split_dataset(
    dataset: SequenceDataset, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[SequenceDataset, SequenceDataset, SequenceDataset]:
    """Shuffle and cut ``dataset`` into (train, validation, test) by ``fractions``.

    Examples that share a source sequence always land in the same split, so no source
    is seen in two splits. Each split with a positive fraction gets at least one source.
    """
    if not isinstance(dataset, SequenceDataset):
        raise TypeError(f"dataset must be a SequenceDataset, got {type(dataset).__name__}")
    fractions = _check_fractions(fractions)
    _require_seed(seed)

    groups: dict[tuple[int, ...], list[Example]] = {}
    for example in dataset.examples:
        groups.setdefault(example.source, []).append(example)
    order = list(groups)
    random.Random(seed).shuffle(order)

    num_train = round(fractions[0] * len(order))
    num_validation = round(fractions[1] * len(order))
    cuts = [0, num_train, num_train + num_validation, len(order)]
    names = ("train", "validation", "test")
    splits = []
    for name, fraction, start, stop in zip(names, fractions, cuts, cuts[1:]):
        if fraction > 0 and stop <= start:
            raise ValueError(
                f"the {name} split (fraction {fraction:g}) would be empty: the dataset has only "
                f"{len(order)} distinct source sequences; use more examples or larger fractions"
            )
        examples = [example for source in order[start:stop] for example in groups[source]]
        splits.append(SequenceDataset(f"{dataset.name}/{name}", examples, dataset.vocab_size, dataset.symbol_names))
    return tuple(splits)



# ----- readable tokens ------------------------------------------------------------------
def token_names(tokens, symbol_names: Sequence[str] | None = None) -> list[str]:
    """One readable name per token: ``·`` for PAD, ``<bos>``, ``<eos>``, then symbol names.

    ``tokens``: a 1-D tensor, array, list or tuple of token ids. Without
    ``symbol_names``, symbols print as ``a, b, ..., z, s26, s27, ...``. Handy for the
    axis labels of an attention heatmap.
    """
    ids = _as_id_list(tokens)
    names = []
    for token in ids:
        if token in SPECIAL_NAMES:
            names.append(SPECIAL_NAMES[token])
            continue
        symbol = token - NUM_SPECIAL
        if symbol_names is not None and symbol < len(symbol_names):
            names.append(str(symbol_names[symbol]))
        else:
            names.append(_default_name(symbol))
    return names


def to_text(tokens, symbol_names: Sequence[str] | None = None, *, skip_padding: bool = True) -> str:
    """Tokens as one space-separated string, e.g. ``'a 3 c 7 c'``; PAD left out unless asked."""
    ids = _as_id_list(tokens)
    if skip_padding:
        ids = [t for t in ids if t != PAD]
    return " ".join(token_names(ids, symbol_names))



# ----- helpers shared by the task modules -------------------------------------------------
def _require_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _require_seed(seed) -> None:
    _require_int(seed, "seed", 0)


def _require_enough(num_examples: int, possible: int, task: str) -> None:
    if num_examples > possible:
        raise ValueError(
            f"{task} cannot make num_examples={num_examples} distinct examples: only {possible} exist "
            "with these settings; ask for fewer, or allow more symbols / longer sequences"
        )


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise TypeError(f"fractions must be three numbers (train, validation, test), got {fractions!r}") from None
    if len(values) != 3:
        raise ValueError(f"fractions must be three numbers (train, validation, test), got {len(values)}: {fractions!r}")
    if any(not math.isfinite(f) or f < 0 for f in values):
        raise ValueError(f"fractions must be finite and >= 0, got {fractions!r}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(values):g})")
    return values


def _as_token_tuple(tokens, name: str) -> tuple[int, ...]:
    if isinstance(tokens, (str, bytes)):
        raise TypeError(f"Example.{name} must be a sequence of token ids, got a {type(tokens).__name__}")
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.tolist()
    try:
        return tuple(operator.index(t) for t in tokens)
    except TypeError:
        raise TypeError(f"Example.{name} must be a sequence of integer token ids, got {tokens!r}") from None


def _as_id_list(tokens) -> list[int]:
    if isinstance(tokens, torch.Tensor):
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be 1-D (one sequence), got shape {tuple(tokens.shape)}")
        if tokens.is_floating_point() or tokens.is_complex():
            raise TypeError(f"tokens must hold integer token ids, got dtype {tokens.dtype}")
        tokens = tokens.tolist()
    elif hasattr(tokens, "ndim") and tokens.ndim != 1:  # numpy arrays
        raise ValueError(f"tokens must be 1-D (one sequence), got shape {tuple(tokens.shape)}")
    try:
        ids = [operator.index(t) for t in tokens]
    except TypeError:
        raise TypeError(f"tokens must be a 1-D sequence of integer token ids, got {tokens!r}") from None
    if any(t < 0 for t in ids):
        raise ValueError(f"token ids must be >= 0, got {min(ids)}")
    return ids


def _default_name(symbol: int) -> str:
    return string.ascii_lowercase[symbol] if symbol < 26 else f"s{symbol}"


def _default_names(count: int) -> tuple[str, ...]:
    return tuple(_default_name(i) for i in range(count))

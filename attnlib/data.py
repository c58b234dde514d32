"""Synthetic sequence tasks, and batches of them (lessons 03 onwards).

Attention is easiest to study on tasks whose right answer we know exactly, so the
course generates its data instead of downloading it:

* ``copy_task``: the target is the source, ``a c b → a c b``;
* ``reverse_task``: the target is the source reversed, ``a c b → b c a``;
* ``associative_recall_task``: the source lists key–value pairs and then asks for one
  key, ``a 3 c 7 b 1 c → 7``: a dictionary lookup, attention's native job.

Tokens are integers. Three are special: ``PAD`` fills the end of short sequences in a
batch, ``BOS`` starts the decoder's input, ``EOS`` ends its output. Symbol ``i`` of a
task is token ``NUM_SPECIAL + i``. Everything is deterministic from a ``seed``, and the
examples of one dataset are distinct, so that ``split_dataset`` can keep every source
sequence in exactly one split (a test example the model has memorised tests nothing).
"""

from __future__ import annotations

import itertools
import math
import operator
import random
import string
from collections.abc import Callable, Iterator, Sequence
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


# ----- the tasks ------------------------------------------------------------------------
def copy_task(
    num_examples: int, *, min_length: int, max_length: int, num_symbols: int = 10, seed: int = 0
) -> SequenceDataset:
    """Distinct random sequences whose target is the sequence itself.

    Lengths are drawn uniformly from ``[min_length, max_length]`` and symbols uniformly
    from ``num_symbols``; a sequence drawn twice is drawn again.
    """
    sources = _distinct_sequences(num_examples, min_length, max_length, num_symbols, seed, "copy_task")
    examples = [Example(source, source) for source in sources]
    return SequenceDataset("copy", examples, NUM_SPECIAL + num_symbols, _default_names(num_symbols))


def reverse_task(
    num_examples: int, *, min_length: int, max_length: int, num_symbols: int = 10, seed: int = 0
) -> SequenceDataset:
    """Distinct random sequences whose target is the sequence reversed.

    Arguments as for :func:`copy_task`. Reversing makes the first output token depend
    on the last input token: hard for a model that squeezes the input into one vector.
    """
    sources = _distinct_sequences(num_examples, min_length, max_length, num_symbols, seed, "reverse_task")
    examples = [Example(source, source[::-1]) for source in sources]
    return SequenceDataset("reverse", examples, NUM_SPECIAL + num_symbols, _default_names(num_symbols))


def associative_recall_task(
    num_examples: int, *, num_pairs: int, num_keys: int, num_values: int, seed: int = 0
) -> SequenceDataset:
    """Key–value lists followed by one of their keys; the target is that key's value.

    Source: ``k1 v1 k2 v2 ... kn vn q`` (length ``2 * num_pairs + 1``) with the ``n``
    keys distinct, each value drawn independently, and ``q`` one of the keys.
    Target: ``(v_q,)``. Keys and values come from disjoint token ranges: key symbol
    ``i`` is token ``NUM_SPECIAL + i``, value symbol ``j`` is token
    ``NUM_SPECIAL + num_keys + j``. Keys print as letters, values as numbers.
    """
    _require_int(num_examples, "num_examples", 1)
    _require_int(num_pairs, "num_pairs", 1)
    _require_int(num_keys, "num_keys", 1)
    _require_int(num_values, "num_values", 2)
    _require_seed(seed)
    if num_pairs > num_keys:
        raise ValueError(
            f"num_pairs={num_pairs} needs that many distinct keys, but num_keys={num_keys}; "
            "use num_keys >= num_pairs"
        )
    possible = math.perm(num_keys, num_pairs) * num_values**num_pairs * num_pairs
    _require_enough(num_examples, possible, "associative_recall_task")

    rng = random.Random(seed)
    first_value = NUM_SPECIAL + num_keys
    seen: set[tuple[int, ...]] = set()
    examples = []
    while len(examples) < num_examples:
        keys = rng.sample(range(num_keys), num_pairs)  # distinct key symbols
        values = [rng.randrange(num_values) for _ in range(num_pairs)]
        asked = rng.randrange(num_pairs)  # which pair the query asks for
        source = []
        for key, value in zip(keys, values):
            source += [NUM_SPECIAL + key, first_value + value]
        source.append(NUM_SPECIAL + keys[asked])
        source = tuple(source)
        if source in seen:
            continue
        seen.add(source)
        examples.append(Example(source, (first_value + values[asked],)))

    key_names = _default_names(num_keys) if num_keys <= 26 else tuple(f"k{i}" for i in range(num_keys))
    names = key_names + tuple(str(j) for j in range(num_values))
    return SequenceDataset("associative_recall", examples, NUM_SPECIAL + num_keys + num_values, names)


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


# ----- helpers --------------------------------------------------------------------------
def _distinct_sequences(num_examples, min_length, max_length, num_symbols, seed, task):
    _require_int(num_examples, "num_examples", 1)
    _require_int(min_length, "min_length", 1)
    _require_int(max_length, "max_length", 1)
    _require_int(num_symbols, "num_symbols", 1)
    _require_seed(seed)
    if min_length > max_length:
        raise ValueError(f"min_length={min_length} is larger than max_length={max_length}")
    possible = sum(num_symbols**length for length in range(min_length, max_length + 1))
    _require_enough(num_examples, possible, task)

    rng = random.Random(seed)
    symbols = range(NUM_SPECIAL, NUM_SPECIAL + num_symbols)
    seen: set[tuple[int, ...]] = set()
    sequences = []
    while len(sequences) < num_examples:
        length = rng.randint(min_length, max_length)  # inclusive at both ends
        sequence = tuple(rng.choices(symbols, k=length))
        if sequence not in seen:
            seen.add(sequence)
            sequences.append(sequence)
    return sequences


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

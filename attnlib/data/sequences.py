"""Sequence tasks whose right answer we know exactly (lessons 03 and 04).

* ``copy_task``: the target is the source, ``a c b → a c b``;
* ``reverse_task``: the target is the source reversed, ``a c b → b c a``;
* ``associative_recall_task``: the source lists key–value pairs and then asks for one
  key, ``a 3 c 7 b 1 c → 7``: a dictionary lookup, attention's native job.

Everything is deterministic from a ``seed``, and the examples of one dataset are distinct.
"""

from __future__ import annotations

import math
import random

from .examples import (
    NUM_SPECIAL,
    Example,
    SequenceDataset,
    _default_names,
    _require_enough,
    _require_int,
    _require_seed,
)


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

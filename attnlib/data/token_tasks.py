"""Tasks that tokens can only solve by looking at each other (lessons 05 and 06).

* ``maximum_task``: label every token of a sequence: is it the largest of its sequence?
  ``3 9 1 9 4 → 0 1 0 1 0``. A token alone cannot know; it must compare itself with the
  others, which is what self-attention lets it do (lesson 05). The task ignores order
  (shuffle the sequence and the labels shuffle with it), so it needs no positions.
* ``two_key_recall_task``: key–value pairs followed by *two* keys, whose values are
  the answer, in order: ``b 7 e 2 a 5 d 0 e a → 2 5``. One question, two places to look
  at: the job of two attention heads (lesson 06).

Both are deterministic from a ``seed``, their examples are distinct, and they return a
:class:`~attnlib.data.SequenceDataset`, so :func:`~attnlib.data.split_dataset` gives
held-out splits and :func:`~attnlib.data.epochs` batches them.
"""

from __future__ import annotations

import math
import random

from .examples import (
    NUM_SPECIAL,
    Example,
    SequenceDataset,
    _require_enough,
    _require_int,
    _require_seed,
)

NO, YES = NUM_SPECIAL + 0, NUM_SPECIAL + 1  # the label tokens of maximum_task's targets


def maximum_task(num_examples: int, *, length: int, num_symbols: int = 16, seed: int = 0) -> SequenceDataset:
    """Distinct random sequences; each token's label says whether it is a maximum of its sequence.

    Source: ``length`` symbols drawn uniformly from ``num_symbols`` (symbol ``i`` is token
    ``NUM_SPECIAL + i`` and prints as the number ``i``). Target: one label per source
    token, :data:`YES` (``NUM_SPECIAL + 1``, prints as ``1``) where the token equals the
    sequence's largest symbol (ties: every copy of the largest is labelled yes), :data:`NO`
    (``NUM_SPECIAL + 0``, prints as ``0``) elsewhere. The label of position ``i`` is
    ``target[i] - NUM_SPECIAL``.
    """
    _require_int(num_examples, "num_examples", 1)
    _require_int(length, "length", 2)
    _require_int(num_symbols, "num_symbols", 2)
    _require_seed(seed)
    _require_enough(num_examples, num_symbols**length, "maximum_task")

    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    examples = []
    while len(examples) < num_examples:
        source = tuple(NUM_SPECIAL + rng.randrange(num_symbols) for _ in range(length))
        if source in seen:
            continue
        seen.add(source)
        largest = max(source)
        examples.append(Example(source, tuple(YES if token == largest else NO for token in source)))
    names = tuple(str(i) for i in range(num_symbols))
    return SequenceDataset("maximum", examples, NUM_SPECIAL + num_symbols, names)


def two_key_recall_task(
    num_examples: int, *, num_pairs: int, num_keys: int, num_values: int, seed: int = 0
) -> SequenceDataset:
    """Key–value lists followed by two of their keys; the target is those keys' values, in order.

    Source: ``k1 v1 k2 v2 ... kn vn a b`` (length ``2 * num_pairs + 2``) with the ``n``
    keys distinct, each value drawn independently, and ``a ≠ b`` two of the keys.
    Target: ``(v_a, v_b)``. The token layout is that of
    :func:`~attnlib.data.associative_recall_task`: key symbol ``i`` is token
    ``NUM_SPECIAL + i`` (printed as a letter), value symbol ``j`` is token
    ``NUM_SPECIAL + num_keys + j`` (printed as a number).
    """
    _require_int(num_examples, "num_examples", 1)
    _require_int(num_pairs, "num_pairs", 2)
    _require_int(num_keys, "num_keys", 2)
    _require_int(num_values, "num_values", 2)
    _require_seed(seed)
    if num_pairs > num_keys:
        raise ValueError(
            f"num_pairs={num_pairs} needs that many distinct keys, but num_keys={num_keys}; "
            "use num_keys >= num_pairs"
        )
    possible = math.perm(num_keys, num_pairs) * num_values**num_pairs * num_pairs * (num_pairs - 1)
    _require_enough(num_examples, possible, "two_key_recall_task")

    rng = random.Random(seed)
    first_value = NUM_SPECIAL + num_keys
    seen: set[tuple[int, ...]] = set()
    examples = []
    while len(examples) < num_examples:
        keys = rng.sample(range(num_keys), num_pairs)  # distinct key symbols
        values = [rng.randrange(num_values) for _ in range(num_pairs)]
        first, second = rng.sample(range(num_pairs), 2)  # which pairs the two questions ask for
        source = []
        for key, value in zip(keys, values):
            source += [NUM_SPECIAL + key, first_value + value]
        source = tuple(source + [NUM_SPECIAL + keys[first], NUM_SPECIAL + keys[second]])
        if source in seen:
            continue
        seen.add(source)
        examples.append(Example(source, (first_value + values[first], first_value + values[second])))

    key_names = _letter_names(num_keys)
    names = key_names + tuple(str(j) for j in range(num_values))
    return SequenceDataset("two_key_recall", examples, NUM_SPECIAL + num_keys + num_values, names)


def _letter_names(count: int) -> tuple[str, ...]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return tuple(letters[i] for i in range(count)) if count <= 26 else tuple(f"k{i}" for i in range(count))

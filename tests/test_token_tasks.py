"""attnlib.data.token_tasks: the tasks of lessons 05 (is each token the maximum?) and 06 (two-key recall)."""

import pytest

from attnlib import data
from attnlib.data import NUM_SPECIAL
from attnlib.data.token_tasks import NO, YES


def test_maximum_task_labels_every_maximum_and_nothing_else():
    dataset = data.maximum_task(300, length=6, num_symbols=5, seed=0)
    assert dataset.vocab_size == NUM_SPECIAL + 5
    assert len({e.source for e in dataset}) == len(dataset)  # distinct
    ties = 0
    for example in dataset:
        assert len(example.source) == len(example.target) == 6
        assert set(example.source) <= set(range(NUM_SPECIAL, NUM_SPECIAL + 5))
        largest = max(example.source)
        assert example.target == tuple(YES if t == largest else NO for t in example.source)
        ties += example.target.count(YES) > 1
    assert ties > 0  # with 5 symbols and 6 tokens, ties happen, and every copy is labelled


def test_maximum_task_is_reproducible_and_readable():
    a = data.maximum_task(40, length=4, seed=1)
    assert a.examples == data.maximum_task(40, length=4, seed=1).examples
    assert a.examples != data.maximum_task(40, length=4, seed=2).examples
    example = data.Example((NUM_SPECIAL + 3, NUM_SPECIAL + 12, NUM_SPECIAL + 12), (NO, YES, YES))
    assert a.to_text(example.source) == "3 12 12" and a.to_text(example.target) == "0 1 1"


def test_maximum_task_splits_hold_out_whole_sequences():
    train, validation, test = data.split_dataset(data.maximum_task(500, length=5, seed=0), seed=0)
    assert len(train) + len(validation) + len(test) == 500
    assert not {e.source for e in train} & {e.source for e in test}


def test_two_key_recall_targets_are_the_two_asked_values_in_order():
    num_pairs, num_keys, num_values = 4, 7, 5
    dataset = data.two_key_recall_task(300, num_pairs=num_pairs, num_keys=num_keys, num_values=num_values, seed=0)
    key_tokens = set(range(NUM_SPECIAL, NUM_SPECIAL + num_keys))
    value_tokens = set(range(NUM_SPECIAL + num_keys, NUM_SPECIAL + num_keys + num_values))
    assert dataset.vocab_size == NUM_SPECIAL + num_keys + num_values
    asked_positions = set()
    for example in dataset:
        source = example.source
        assert len(source) == 2 * num_pairs + 2
        keys, values, (first, second) = source[0:-2:2], source[1:-2:2], source[-2:]
        assert set(keys) <= key_tokens and set(values) <= value_tokens
        assert len(set(keys)) == num_pairs and first != second and {first, second} <= set(keys)
        table = dict(zip(keys, values))
        assert example.target == (table[first], table[second])
        asked_positions.add((keys.index(first), keys.index(second)))
    assert len(asked_positions) == num_pairs * (num_pairs - 1)  # every ordered pair of slots gets asked
    text = dataset.to_text(dataset[0].source)
    assert text.split()[0] in "abcdefg" and text.split()[1].isdigit()
    again = data.two_key_recall_task(300, num_pairs=num_pairs, num_keys=num_keys, num_values=num_values, seed=0)
    assert again.examples == dataset.examples


def test_every_possible_two_key_example_can_be_requested():
    # 2 keys out of 2, 2 values each: 2! * 2**2 * 2 * 1 = 16 distinct examples
    assert len(data.two_key_recall_task(16, num_pairs=2, num_keys=2, num_values=2, seed=0)) == 16
    assert len(data.maximum_task(8, length=3, num_symbols=2, seed=0)) == 8


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: data.maximum_task(0, length=4), ValueError, "num_examples must be >= 1, got 0"),
        (lambda: data.maximum_task(5, length=1), ValueError, "length must be >= 2, got 1"),
        (lambda: data.maximum_task(5, length=4, num_symbols=1), ValueError, "num_symbols must be >= 2"),
        (lambda: data.maximum_task(9, length=3, num_symbols=2), ValueError, "only 8 exist"),
        (lambda: data.maximum_task(5, length=4.0), TypeError, "length must be an int"),
        (lambda: data.maximum_task(5, length=4, seed=-1), ValueError, "seed must be >= 0"),
        (lambda: data.two_key_recall_task(5, num_pairs=1, num_keys=4, num_values=3), ValueError,
         "num_pairs must be >= 2, got 1"),
        (lambda: data.two_key_recall_task(5, num_pairs=5, num_keys=4, num_values=3), ValueError,
         "num_pairs=5 needs that many distinct keys, but num_keys=4"),
        (lambda: data.two_key_recall_task(17, num_pairs=2, num_keys=2, num_values=2), ValueError, "only 16 exist"),
        (lambda: data.two_key_recall_task(5, num_pairs=2, num_keys="4", num_values=3), TypeError,
         "num_keys must be an int"),
    ],
)
def test_errors_say_what_was_expected(call, error, message):
    with pytest.raises(error, match=message):
        call()

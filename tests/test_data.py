"""attnlib.data: synthetic tasks, splits and padded batches."""

import numpy as np
import pytest
import torch

from attnlib import data
from attnlib.data import BOS, EOS, NUM_SPECIAL, PAD, Example, SequenceDataset


# ----- the tasks ------------------------------------------------------------------------
@pytest.mark.parametrize("task", [data.copy_task, data.reverse_task])
def test_sequence_tasks_are_reproducible_from_the_seed(task):
    a = task(50, min_length=2, max_length=6, seed=3)
    b = task(50, min_length=2, max_length=6, seed=3)
    c = task(50, min_length=2, max_length=6, seed=4)
    assert a.examples == b.examples
    assert a.examples != c.examples


def test_recall_task_is_reproducible_from_the_seed():
    kwargs = dict(num_pairs=3, num_keys=6, num_values=5)
    assert data.associative_recall_task(40, seed=1, **kwargs).examples == data.associative_recall_task(40, seed=1, **kwargs).examples
    assert data.associative_recall_task(40, seed=1, **kwargs).examples != data.associative_recall_task(40, seed=2, **kwargs).examples


@pytest.mark.parametrize("task", [data.copy_task, data.reverse_task])
def test_lengths_are_in_range_and_cover_it(task):
    dataset = task(400, min_length=3, max_length=7, num_symbols=5, seed=0)
    lengths = dataset.source_lengths()
    assert min(lengths) == 3 and max(lengths) == 7
    assert set(lengths) == {3, 4, 5, 6, 7}
    counts = np.bincount(lengths)[3:]
    assert counts.min() > 400 / 5 * 0.6  # roughly uniform
    assert dataset.target_lengths() == lengths


def test_copy_and_reverse_targets():
    copy = data.copy_task(30, min_length=1, max_length=5, num_symbols=4, seed=0)
    reverse = data.reverse_task(30, min_length=1, max_length=5, num_symbols=4, seed=0)
    assert all(e.target == e.source for e in copy)
    assert all(e.target == e.source[::-1] for e in reverse)
    for dataset in (copy, reverse):
        tokens = {t for e in dataset for t in e.source}
        assert tokens <= set(range(NUM_SPECIAL, NUM_SPECIAL + 4))
        assert dataset.vocab_size == NUM_SPECIAL + 4
        assert len({e.source for e in dataset}) == len(dataset)  # distinct


def test_recall_targets_keys_and_values():
    num_pairs, num_keys, num_values = 4, 7, 5
    dataset = data.associative_recall_task(200, num_pairs=num_pairs, num_keys=num_keys, num_values=num_values, seed=0)
    key_tokens = set(range(NUM_SPECIAL, NUM_SPECIAL + num_keys))
    value_tokens = set(range(NUM_SPECIAL + num_keys, NUM_SPECIAL + num_keys + num_values))
    assert dataset.vocab_size == NUM_SPECIAL + num_keys + num_values
    for example in dataset:
        source = example.source
        assert len(source) == 2 * num_pairs + 1
        keys, values, query = source[0:-1:2], source[1:-1:2], source[-1]
        assert set(keys) <= key_tokens and set(values) <= value_tokens
        assert len(set(keys)) == num_pairs  # distinct within an example
        assert query in keys
        assert example.target == (values[keys.index(query)],)
    assert len({e.source for e in dataset}) == len(dataset)
    asked = [e.source[:-1:2].index(e.source[-1]) for e in dataset]
    assert set(asked) == set(range(num_pairs))  # every position gets asked


def test_readable_text():
    dataset = data.associative_recall_task(3, num_pairs=2, num_keys=3, num_values=10, seed=0)
    example = Example((NUM_SPECIAL + 0, NUM_SPECIAL + 3 + 7, NUM_SPECIAL + 2, NUM_SPECIAL + 3 + 1, NUM_SPECIAL + 0), (NUM_SPECIAL + 3 + 7,))
    assert dataset.to_text(example.source) == "a 7 c 1 a"
    assert dataset.to_text(example.target) == "7"
    tokens = torch.tensor([BOS, 5, 3, EOS, PAD, PAD])
    assert data.to_text(tokens) == "<bos> c a <eos>"
    assert data.to_text(tokens, skip_padding=False) == "<bos> c a <eos> · ·"
    assert data.token_names([3, 4, NUM_SPECIAL + 30]) == ["a", "b", "s30"]
    assert data.token_names(np.array([4, 3]), ["x", "y"]) == ["y", "x"]
    with pytest.raises(ValueError, match="1-D"):
        data.to_text(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        data.to_text(torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_examples=0, min_length=1, max_length=3), "num_examples must be >= 1"),
        (dict(num_examples=5, min_length=0, max_length=3), "min_length must be >= 1"),
        (dict(num_examples=5, min_length=4, max_length=3), "min_length=4 is larger than max_length=3"),
        (dict(num_examples=5, min_length=1, max_length=3, num_symbols=0), "num_symbols must be >= 1"),
        (dict(num_examples=7, min_length=1, max_length=1, num_symbols=6), "only 6 exist"),
        (dict(num_examples=5, min_length=1, max_length=3, seed=-1), "seed must be >= 0"),
    ],
)
def test_sequence_task_errors(kwargs, message):
    num_examples = kwargs.pop("num_examples")
    for task in (data.copy_task, data.reverse_task):
        with pytest.raises(ValueError, match=message):
            task(num_examples, **kwargs)


def test_sequence_task_type_errors():
    with pytest.raises(TypeError, match="max_length must be an int"):
        data.copy_task(5, min_length=1, max_length=2.5)
    with pytest.raises(TypeError, match="num_examples must be an int"):
        data.copy_task(True, min_length=1, max_length=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_examples=0, num_pairs=2, num_keys=4, num_values=4), "num_examples must be >= 1"),
        (dict(num_examples=5, num_pairs=0, num_keys=4, num_values=4), "num_pairs must be >= 1"),
        (dict(num_examples=5, num_pairs=5, num_keys=4, num_values=4), "num_pairs=5 needs that many distinct keys"),
        (dict(num_examples=5, num_pairs=2, num_keys=4, num_values=1), "num_values must be >= 2"),
        (dict(num_examples=17, num_pairs=1, num_keys=2, num_values=8), "only 16 exist"),
    ],
)
def test_recall_task_errors(kwargs, message):
    num_examples = kwargs.pop("num_examples")
    with pytest.raises(ValueError, match=message):
        data.associative_recall_task(num_examples, **kwargs)


def test_every_possible_example_can_be_requested():
    dataset = data.copy_task(6 + 36, min_length=1, max_length=2, num_symbols=6, seed=0)
    assert len({e.source for e in dataset}) == 42
    recall = data.associative_recall_task(16, num_pairs=1, num_keys=2, num_values=8)
    assert len({e.source for e in recall}) == 16


def test_example_and_dataset_checks():
    assert Example([3, 4], [5]).source == (3, 4)  # lists become tuples
    with pytest.raises(ValueError, match="special token"):
        Example((3, PAD), (4,))
    with pytest.raises(ValueError, match="at least one token"):
        Example((), (4,))
    with pytest.raises(TypeError, match="integer token ids"):
        Example((3.5,), (4,))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        SequenceDataset("x", [Example((3, 9), (3,))], vocab_size=9)
    with pytest.raises(TypeError, match=r"examples\[0\] must be an Example"):
        SequenceDataset("x", [((3,), (3,))], vocab_size=9)


# ----- splits ---------------------------------------------------------------------------
def test_split_is_disjoint_complete_and_reproducible():
    dataset = data.reverse_task(500, min_length=2, max_length=6, seed=0)
    train, validation, test = data.split_dataset(dataset, (0.8, 0.1, 0.1), seed=5)
    assert (len(train), len(validation), len(test)) == (400, 50, 50)
    sources = [{e.source for e in split} for split in (train, validation, test)]
    assert not (sources[0] & sources[1]) and not (sources[0] & sources[2]) and not (sources[1] & sources[2])
    assert sorted(e.source for split in (train, validation, test) for e in split) == sorted(e.source for e in dataset)
    again = data.split_dataset(dataset, (0.8, 0.1, 0.1), seed=5)
    assert [s.examples for s in again] == [train.examples, validation.examples, test.examples]
    other = data.split_dataset(dataset, (0.8, 0.1, 0.1), seed=6)
    assert other[0].examples != train.examples
    assert train.name == "reverse/train" and test.vocab_size == dataset.vocab_size


def test_split_keeps_duplicate_sources_together():
    examples = [Example((3, 4), (3,)), Example((3, 4), (4,))] * 5 + [Example((3 + i,), (3,)) for i in range(20)]
    dataset = SequenceDataset("dup", examples, vocab_size=30)
    splits = data.split_dataset(dataset, (0.5, 0.25, 0.25), seed=0)
    holding = [i for i, split in enumerate(splits) if any(e.source == (3, 4) for e in split)]
    assert len(holding) == 1
    assert sum(e.source == (3, 4) for e in splits[holding[0]]) == 10


def test_split_errors():
    dataset = data.copy_task(5, min_length=1, max_length=2, seed=0)
    with pytest.raises(ValueError, match="must sum to 1"):
        data.split_dataset(dataset, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="three numbers"):
        data.split_dataset(dataset, (0.5, 0.5))
    with pytest.raises(ValueError, match=">= 0"):
        data.split_dataset(dataset, (1.2, -0.1, -0.1))
    with pytest.raises(ValueError, match="validation split .* would be empty"):
        data.split_dataset(dataset, (0.95, 0.03, 0.02))
    with pytest.raises(TypeError, match="SequenceDataset"):
        data.split_dataset(dataset.examples)
    train, validation, test = data.split_dataset(dataset, (1.0, 0.0, 0.0))
    assert len(train) == 5 and len(validation) == len(test) == 0


# ----- batches --------------------------------------------------------------------------
def test_collate_pads_and_masks():
    examples = [Example((3, 4, 5), (6, 7)), Example((8,), (9, 10, 11, 12))]
    batch = data.collate(examples)
    assert len(batch) == 2
    torch.testing.assert_close(batch.source, torch.tensor([[3, 4, 5], [8, PAD, PAD]]))
    torch.testing.assert_close(batch.source_mask, torch.tensor([[True, True, True], [True, False, False]]))
    torch.testing.assert_close(batch.target_input, torch.tensor([[BOS, 6, 7, PAD, PAD], [BOS, 9, 10, 11, 12]]))
    torch.testing.assert_close(batch.target_output, torch.tensor([[6, 7, EOS, PAD, PAD], [9, 10, 11, 12, EOS]]))
    torch.testing.assert_close(batch.target_mask, torch.tensor([[True, True, True, False, False], [True] * 5]))
    torch.testing.assert_close(batch.source_lengths, torch.tensor([3, 1]))
    assert batch.source.dtype == torch.long and batch.source_mask.dtype == torch.bool
    # the mask is True exactly where the token is not PAD (generated data never holds PAD)
    assert torch.equal(batch.source_mask, batch.source != PAD)
    assert torch.equal(batch.target_mask, batch.target_output != PAD)


def test_collate_errors():
    with pytest.raises(ValueError, match="empty"):
        data.collate([])
    with pytest.raises(TypeError, match="sequence"):
        data.collate(Example((3,), (3,)))
    with pytest.raises(TypeError, match=r"examples\[1\] must be an Example"):
        data.collate([Example((3,), (3,)), (3,)])


def test_batches_cover_the_data_once_and_shuffle_reproducibly():
    dataset = data.copy_task(23, min_length=1, max_length=4, seed=0)
    plain = list(data.batches(dataset, 5))
    assert [len(b) for b in plain] == [5, 5, 5, 5, 3]
    assert [len(b) for b in data.batches(dataset, 5, drop_last=True)] == [5, 5, 5, 5]
    assert data.to_text(plain[0].source[0]) == dataset.to_text(dataset[0].source)

    def order(batches):
        return [tuple(row[mask].tolist()) for b in batches for row, mask in zip(b.source, b.source_mask)]

    shuffled = order(data.batches(dataset, 5, shuffle=True, seed=1))
    assert sorted(shuffled) == sorted(e.source for e in dataset)
    assert shuffled != [e.source for e in dataset]
    assert shuffled == order(data.batches(dataset, 5, shuffle=True, seed=1))
    assert shuffled != order(data.batches(dataset, 5, shuffle=True, seed=2))


def test_batches_errors_are_raised_at_once():
    dataset = data.copy_task(5, min_length=1, max_length=2, seed=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.batches(dataset, 0)  # not only when iterated
    with pytest.raises(TypeError, match="SequenceDataset"):
        data.batches(dataset.examples, 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.epochs(dataset, 0)


def test_batches_move_to_a_device():
    dataset = data.copy_task(4, min_length=1, max_length=2, seed=0)
    batch = next(data.batches(dataset, 4, device="cpu"))
    assert batch.source.device.type == "cpu"
    moved = batch.to(torch.device("cpu"))
    assert isinstance(moved, data.Batch) and torch.equal(moved.target_output, batch.target_output)


def test_epochs_reshuffle_each_call():
    dataset = data.copy_task(30, min_length=1, max_length=3, seed=0)
    next_epoch = data.epochs(dataset, 30, seed=0)
    first, second = next(next_epoch()), next(next_epoch())
    assert not torch.equal(first.source, second.source)
    assert torch.equal(first.source, next(data.batches(dataset, 30, shuffle=True, seed=0)).source)
    assert torch.equal(second.source, next(data.batches(dataset, 30, shuffle=True, seed=1)).source)

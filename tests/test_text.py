"""attnlib.data.text: the standard-library corpus, the character tokenizer, splits and windows."""

import pytest
import torch

from attnlib import data


def test_corpus_is_deterministic_capped_and_printable():
    text = data.python_source_corpus(200_000)
    assert len(text) == 200_000 and text == data.python_source_corpus(200_000)
    assert text.startswith("# ---- abc.py ----\n")
    assert set(text) <= set(chr(c) for c in range(32, 127)) | {"\n"}
    assert "def " in text and "class " in text and "return" in text
    small = data.python_source_corpus(1000, modules=("textwrap", "no_such_module"))
    assert small.startswith("# ---- textwrap.py ----") and len(small) == 1000


def test_corpus_errors():
    with pytest.raises(FileNotFoundError, match="was found"):
        data.python_source_corpus(100, modules=("no_such_module",))
    with pytest.raises(ValueError, match="max_chars must be an int >= 1"):
        data.python_source_corpus(0)
    with pytest.raises(TypeError, match="modules must be a tuple"):
        data.python_source_corpus(10, modules="textwrap")


def test_tokenizer_round_trip():
    text = data.python_source_corpus(50_000)
    tokenizer = data.CharTokenizer(text)
    ids = tokenizer.encode(text)
    assert ids.dtype == torch.long and ids.shape == (50_000,)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids[:10].tolist()) == text[:10]
    assert tokenizer.chars == sorted(set(text)) and tokenizer.vocab_size == len(set(text))
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        data.CharTokenizer("abc").encode("abd")
    with pytest.raises(ValueError, match=r"ids must be ints in \[0, 3\)"):
        data.CharTokenizer("abc").decode([0, 3])
    with pytest.raises(ValueError, match="non-empty string"):
        data.CharTokenizer("")


def test_split_by_position():
    tokens = torch.arange(100)
    train, validation = data.split_by_position(tokens, 0.9)
    assert torch.equal(train, torch.arange(90)) and torch.equal(validation, torch.arange(90, 100))
    with pytest.raises(ValueError, match="train_fraction must be a float in"):
        data.split_by_position(tokens, 1.0)


def test_windows_are_shifted_by_one_and_reproducible():
    tokens = torch.arange(1000)
    epoch = data.random_windows(tokens, block_size=8, batch_size=4, seed=3, batches_per_epoch=5)
    batches = list(epoch())
    assert len(batches) == 5
    for x, y in batches:
        assert x.shape == y.shape == (4, 8)
        assert torch.equal(y, x + 1)  # the next token at every position
        assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # a contiguous window
    again = list(data.random_windows(tokens, 8, 4, seed=3, batches_per_epoch=5)())
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    second = list(epoch())
    assert not torch.equal(second[0][0], batches[0][0])  # the next epoch carries on


def test_windows_errors():
    with pytest.raises(ValueError, match="needs block_size \\+ 1 = 11 tokens"):
        data.random_windows(torch.arange(10), 10, 2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        data.random_windows(torch.arange(100), 10, 0)
    with pytest.raises(ValueError, match="1-D long tensor"):
        data.random_windows(torch.arange(100.0), 10, 2)

"""Text for language models (lessons 10, 13 and 14), read from what every Python install has.

No download: the corpus is the source code of a fixed list of modules of Python's own
standard library, which ships with every Python. A character-level model trained on it
learns to write something that looks like Python.

* :func:`python_source_corpus`: the text, deterministic for a given Python minor version;
* :class:`CharTokenizer`: one token per character, with an exact encode/decode round trip;
* :func:`split_by_position`: the first part of the text for training, the rest held out;
* :func:`random_windows`: batches of random windows ``(x, y)`` where ``y`` is ``x``
  shifted by one token: the next-token targets.

**Between Python versions** the modules' source changes a little (and a module that a
version no longer ships is skipped), so the text, its size and occasionally its character
set differ between, say, Python 3.11 and Colab's 3.13; on one minor version it is the same
on every machine. Characters outside printable ASCII (rare: a few names and quotes in
comments) are replaced by ``?`` so the vocabulary stays under 100 characters.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

# Modules that every Python from 3.10 to 3.13 ships as a single file (pathlib and zipfile
# became packages; asyncore, imp and others were removed, so they are not listed).
CORPUS_MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "colorsys", "contextlib", "copy", "csv",
    "dataclasses", "difflib", "enum", "fnmatch", "fractions", "functools", "heapq", "inspect",
    "ipaddress", "keyword", "numbers", "operator", "pprint", "queue", "random", "sched", "shlex",
    "shutil", "statistics", "string", "textwrap", "tokenize", "typing", "uuid", "weakref",
)
_PRINTABLE = set(chr(c) for c in range(32, 127)) | {"\n"}


def python_source_corpus(max_chars: int = 1_000_000, *, modules: tuple[str, ...] = CORPUS_MODULES) -> str:
    """The source of ``modules`` of the standard library, in that order, capped at ``max_chars`` characters.

    Each file is preceded by a ``# ---- name.py ----`` line. Tabs become four spaces, other
    characters outside printable ASCII become ``?``. A module this Python does not ship is
    skipped; if none is found a ``FileNotFoundError`` says where it looked.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"max_chars must be an int >= 1, got {max_chars!r}")
    if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
        raise TypeError("modules must be a tuple of module names, e.g. ('textwrap', 'string')")
    folder = Path(sysconfig.get_paths()["stdlib"])
    pieces, total = [], 0
    for name in modules:
        path = folder / f"{name}.py"
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8").replace("\t", "    ")
        text = "".join(c if c in _PRINTABLE else "?" for c in text)
        piece = f"# ---- {name}.py ----\n{text}\n"
        pieces.append(piece)
        total += len(piece)
        if total >= max_chars:
            break
    if not pieces:
        raise FileNotFoundError(f"none of the modules {modules[:3]}... was found as a .py file in {folder}")
    return "".join(pieces)[:max_chars]


class CharTokenizer:
    """One token per distinct character of a text; ids in sorted character order.

    ``CharTokenizer(text)``; ``encode(str) -> (N,) long tensor``; ``decode(ids) -> str``;
    ``vocab_size``; ``chars`` (the characters, by id).
    """

    def __init__(self, text: str):
        if not isinstance(text, str) or not text:
            raise ValueError("CharTokenizer needs a non-empty string to take its characters from")
        self.chars = sorted(set(text))
        self.ids = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """``text`` → its token ids, ``(len(text),)`` long."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        unknown = sorted(set(text) - self.ids.keys())
        if unknown:
            raise ValueError(f"characters not in the tokenizer's vocabulary: {unknown[:10]!r}")
        return torch.tensor([self.ids[c] for c in text], dtype=torch.long)  # (N,)

    def decode(self, ids) -> str:
        """Token ids (a 1-D tensor or a list of ints) → the text."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if isinstance(ids, torch.Tensor) and ids.dim() != 1:
            raise ValueError(f"decode takes a 1-D sequence of ids, got shape {tuple(ids.shape)}")
        bad = [i for i in values if not isinstance(i, int) or not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids must be ints in [0, {self.vocab_size}), got {bad[:5]}")
        return "".join(self.chars[i] for i in values)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def split_by_position(tokens: torch.Tensor, train_fraction: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``train_fraction`` of ``tokens`` ``(N,)`` for training, the rest for validation.

    A split by position, not at random: no validation window overlaps a training window
    (except at the one boundary), so the validation loss measures text the model never saw.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1:
        raise ValueError("tokens must be a 1-D tensor of token ids")
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, float) or not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be a float in (0, 1), got {train_fraction!r}")
    cut = int(len(tokens) * train_fraction)
    return tokens[:cut], tokens[cut:]  # (cut,), (N - cut,)


def random_windows(tokens: torch.Tensor, block_size: int, batch_size: int, *, seed: int = 0,
                   batches_per_epoch: int = 100) -> Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Random training windows for :func:`attnlib.train.fit`.

    Returns a function; each call yields ``batches_per_epoch`` batches ``(x, y)``, each
    ``(batch_size, block_size)`` long, where ``y[b, t] = tokens[start_b + t + 1]``: the
    token that follows ``x[b, t]``. The windows' starts come from one seeded generator that
    carries on between calls, so a run is reproducible and never repeats an epoch.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.dtype != torch.long:
        raise ValueError("tokens must be a 1-D long tensor of token ids")
    for name, value in (("block_size", block_size), ("batch_size", batch_size),
                        ("batches_per_epoch", batches_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if len(tokens) < block_size + 1:
        raise ValueError(f"a window needs block_size + 1 = {block_size + 1} tokens, but there are {len(tokens)}")
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.arange(block_size)  # (T,)

    def epoch():
        for _ in range(batches_per_epoch):
            starts = torch.randint(0, len(tokens) - block_size, (batch_size, 1), generator=generator)  # (B, 1)
            x = tokens[starts + offsets]  # (B, T)
            y = tokens[starts + offsets + 1]  # (B, T): the next token at every position
            yield x, y

    return epoch

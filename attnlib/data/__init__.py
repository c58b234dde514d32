"""The course's data, generated rather than downloaded (lessons 03 onwards).

Attention is easiest to study on tasks whose right answer we know exactly. One module
per family of tasks:

* :mod:`~attnlib.data.examples`: token ids (``PAD``, ``BOS``, ``EOS``), ``Example``,
  ``SequenceDataset``, ``split_dataset``, readable token names;
* :mod:`~attnlib.data.sequences`: copy, reverse and associative-recall tasks;
* :mod:`~attnlib.data.batching`: padded ``Batch``es and ``epochs`` for the training loop;
* :mod:`~attnlib.data.token_tasks`: tasks that need tokens to look at each other
  (is each token the maximum? two-key recall);
* :mod:`~attnlib.data.text`: a text corpus read from Python's own standard library, a
  character tokenizer, and random training windows for language models;
* :mod:`~attnlib.data.translation`: English into a made-up subject–object–verb language,
  with agreement and a known alignment (lesson 09);
* :mod:`~attnlib.data.images`: small generated images whose label relates two distant
  objects (are the two shapes the same colour?), an ``ImageDataset`` that knows where
  its objects are (lesson 12);
* :mod:`~attnlib.data.repeats`: random tokens that repeat, for language models (lesson 13).

Everything is importable from ``attnlib.data`` directly, e.g. ``data.copy_task``.
"""

from .batching import Batch, batches, collate, epochs
from .examples import (
    BOS,
    EOS,
    NUM_SPECIAL,
    PAD,
    SPECIAL_NAMES,
    Example,
    SequenceDataset,
    split_dataset,
    to_text,
    token_names,
)
from .images import ImageDataset, same_colour_task
from .repeats import RepeatedTokens, repeated_tokens
from .sequences import associative_recall_task, copy_task, reverse_task
from .text import CharTokenizer, python_source_corpus, random_windows, split_by_position
from .token_tasks import maximum_task, two_key_recall_task
from .translation import reference_translation, translation_alignment, translation_task, translation_tokens

__all__ = [
    "BOS",
    "Batch",
    "CharTokenizer",
    "EOS",
    "Example",
    "ImageDataset",
    "NUM_SPECIAL",
    "PAD",
    "RepeatedTokens",
    "SPECIAL_NAMES",
    "SequenceDataset",
    "associative_recall_task",
    "batches",
    "collate",
    "copy_task",
    "epochs",
    "maximum_task",
    "python_source_corpus",
    "random_windows",
    "reference_translation",
    "repeated_tokens",
    "reverse_task",
    "same_colour_task",
    "split_by_position",
    "split_dataset",
    "to_text",
    "token_names",
    "translation_alignment",
    "translation_task",
    "translation_tokens",
    "two_key_recall_task",
]

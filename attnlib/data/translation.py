"""A synthetic translation task with reordering and agreement (lesson 09).

English sentences of a tiny grammar are translated into a made-up language whose word
order differs, so that a translator has to look back and forth in the source:

    English (subject–verb–object):   the big dog saw a small cat near the king
    target  (subject–object–verb):   kado tora ko raku ko pe miso pika na vidu

* **Word order.** The target puts the verb last, and a prepositional phrase ("near the
  king") between subject and object, as a postposition ("raku ko pe" = "king the near").
  Inside a noun phrase the noun comes first, then its adjectives in reverse order, then the
  article: "the big tall dog" → "kado vela tora ko".
* **Agreement.** English past-tense verbs do not show number; the target's do: the verb
  agrees with the *subject* ("vidu" after a singular subject, "vidun" after a plural one),
  and every adjective agrees with its noun ("tora" / "tore"). Getting them right means
  looking at a word that is not the one being translated.
* **Alignment.** Every target word translates exactly one source word, so each target
  position has a known source position (:func:`translation_alignment`): the reordering
  can be checked in a model's cross-attention.

Sources and targets share one vocabulary (as the paper's encoder and decoder share one
vocabulary of subword tokens): the special tokens, then the source words, then the target
words. Everything is deterministic from a ``seed``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

from .examples import NUM_SPECIAL, Example, SequenceDataset, _as_id_list, _require_enough, _require_int, _require_seed

# ----- the lexicon ------------------------------------------------------------------------
# English noun (singular, plural) -> target stem; the target plural adds "n".
_NOUNS = {("dog", "dogs"): "kado", ("cat", "cats"): "miso", ("bird", "birds"): "pilo", ("horse", "horses"): "ruba",
          ("fox", "foxes"): "vesi", ("wolf", "wolves"): "garo", ("bear", "bears"): "oku", ("mouse", "mice"): "nira",
          ("child", "children"): "beto", ("teacher", "teachers"): "maelo", ("farmer", "farmers"): "tolu",
          ("king", "kings"): "raku", ("queen", "queens"): "sira", ("doctor", "doctors"): "meda",
          ("student", "students"): "lumi"}
# English adjective -> target stem; "a" with a singular noun, "e" with a plural one.
_ADJECTIVES = {"big": "tor", "small": "pik", "tall": "vel", "young": "nov", "red": "rus", "black": "nok",
               "happy": "fel", "sad": "ir", "quiet": "kal", "clever": "sag"}
# English past-tense verb -> target stem; "u" after a singular subject, "un" after a plural one.
_VERBS = {"saw": "vid", "chased": "kur", "liked": "am", "helped": "ayud", "found": "trov", "followed": "seg",
          "heard": "od", "fed": "nutr", "painted": "pint", "visited": "vizit", "called": "vok", "met": "renk"}
_PREPOSITIONS = {"near": "pe", "behind": "ta", "with": "lo", "under": "su", "beside": "ri"}
_ARTICLES = {"the": "ko", "a": "na", "some": "na"}  # "a" only before a singular noun, "some" only before a plural
_SINGULAR_DETERMINERS, _PLURAL_DETERMINERS = ("the", "a"), ("the", "some")

SOURCE_WORDS: tuple[str, ...] = (
    tuple(_ARTICLES) + tuple(w for pair in _NOUNS for w in pair) + tuple(_ADJECTIVES) + tuple(_VERBS)
    + tuple(_PREPOSITIONS))
TARGET_WORDS: tuple[str, ...] = (
    ("ko", "na") + tuple(w for stem in _NOUNS.values() for w in (stem, stem + "n"))
    + tuple(w for stem in _ADJECTIVES.values() for w in (stem + "a", stem + "e"))
    + tuple(w for stem in _VERBS.values() for w in (stem + "u", stem + "un")) + tuple(_PREPOSITIONS.values()))
WORDS = SOURCE_WORDS + TARGET_WORDS  # the shared vocabulary: word i is token NUM_SPECIAL + i
_ID = {word: NUM_SPECIAL + i for i, word in enumerate(WORDS)}
VOCAB_SIZE = NUM_SPECIAL + len(WORDS)

_NOUN_OF = {form: (stem, plural) for (singular, plural_form), stem in _NOUNS.items()
            for form, plural in ((singular, False), (plural_form, True))}
_MAX_ADJECTIVES = 4


# ----- the task ---------------------------------------------------------------------------
def translation_task(num_examples: int, *, max_adjectives: int = 2, phrase_probability: float = 0.5,
                     seed: int = 0) -> SequenceDataset:
    """``num_examples`` distinct English sentences and their translations, as token ids.

    A sentence is ``subject verb object [preposition noun-phrase]``; a noun phrase is a
    determiner, 0 to ``max_adjectives`` adjectives (uniformly many) and a noun, singular
    or plural with equal chance; the prepositional phrase comes with probability
    ``phrase_probability``. No noun and no adjective occurs twice in a sentence, so every
    target word can be traced to one source word. Sources have 5 to ``3·(2 +
    max_adjectives) + 2`` words, and every target has as many words as its source. See
    the module for the target's rules.
    """
    _require_int(num_examples, "num_examples", 1)
    _require_int(max_adjectives, "max_adjectives", 0)
    if max_adjectives > _MAX_ADJECTIVES:
        raise ValueError(f"max_adjectives must be at most {_MAX_ADJECTIVES}, got {max_adjectives}")
    if (isinstance(phrase_probability, bool) or not isinstance(phrase_probability, (int, float))
            or not 0.0 <= phrase_probability <= 1.0):
        raise ValueError(f"phrase_probability must be a number in [0, 1], got {phrase_probability!r}")
    _require_seed(seed)
    possible = sum(_count_sentences(n, max_adjectives) for n, allowed in ((2, phrase_probability < 1),
                                                                         (3, phrase_probability > 0)) if allowed)
    _require_enough(num_examples, possible, "translation_task")

    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    examples = []
    while len(examples) < num_examples:
        used: set[str] = set()  # nouns and adjectives already in the sentence
        words = _noun_phrase(rng, max_adjectives, used) + [rng.choice(tuple(_VERBS))]
        words += _noun_phrase(rng, max_adjectives, used)
        if rng.random() < phrase_probability:
            words += [rng.choice(tuple(_PREPOSITIONS))] + _noun_phrase(rng, max_adjectives, used)
        source = tuple(_ID[w] for w in words)
        if source in seen:
            continue
        seen.add(source)
        target, _ = _translate(words)
        examples.append(Example(source, tuple(_ID[w] for w in target)))
    return SequenceDataset("translation", examples, VOCAB_SIZE, WORDS)


def translation_tokens(sentence: str) -> tuple[int, ...]:
    """The token ids of an English ``sentence`` of the task's grammar, e.g. ``"the dog saw a cat"``."""
    if not isinstance(sentence, str):
        raise TypeError(f"sentence must be a str, got {type(sentence).__name__}")
    words = sentence.lower().split()
    unknown = [w for w in words if w not in SOURCE_WORDS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an English word of the task; it knows: {', '.join(SOURCE_WORDS)}")
    tokens = tuple(_ID[w] for w in words)
    _translate(words)  # checks the grammar
    return tokens


def reference_translation(source) -> tuple[int, ...]:
    """The correct translation (token ids) of a source sentence (token ids)."""
    return tuple(_ID[w] for w in _translate(_source_words(source))[0])


def translation_alignment(source) -> tuple[int, ...]:
    """For each word of the translation of ``source``, the position of the source word it translates.

    ``alignment[t] = s`` means target word ``t`` translates source word ``s`` (positions
    from 0, special tokens excluded). The verb's agreement comes from the subject, but the
    verb is aligned with the verb: the word it translates.
    """
    return _translate(_source_words(source))[1]


# ----- the grammar --------------------------------------------------------------------------
def _noun_phrase(rng: random.Random, max_adjectives: int, used: set[str]) -> list[str]:
    """A determiner, adjectives and a noun, none of whose noun and adjectives is in ``used`` (updated)."""
    plural = rng.random() < 0.5
    singular_form, plural_form = rng.choice([pair for pair in _NOUNS if pair[0] not in used])
    determiner = rng.choice(_PLURAL_DETERMINERS if plural else _SINGULAR_DETERMINERS)
    free = [a for a in _ADJECTIVES if a not in used]
    adjectives = rng.sample(free, rng.randint(0, min(max_adjectives, len(free))))
    used.update([singular_form, *adjectives])
    return [determiner, *adjectives, plural_form if plural else singular_form]


def _count_sentences(phrases: int, max_adjectives: int) -> int:
    """How many distinct sentences with ``phrases`` noun phrases (2, or 3 with a preposition) the grammar makes."""
    adjective_choices = sum(math.perm(len(_ADJECTIVES), sum(counts))
                            for counts in itertools.product(range(max_adjectives + 1), repeat=phrases))
    nouns = math.perm(len(_NOUNS), phrases) * (2 * 2) ** phrases  # distinct nouns; number; determiner
    return nouns * adjective_choices * len(_VERBS) * (len(_PREPOSITIONS) if phrases == 3 else 1)


def _source_words(source) -> list[str]:
    ids = _as_id_list(source)
    words = []
    for token in ids:
        index = token - NUM_SPECIAL
        if not 0 <= index < len(SOURCE_WORDS):
            raise ValueError(f"token {token} is not an English word of the translation task (source words are "
                             f"tokens {NUM_SPECIAL} to {NUM_SPECIAL + len(SOURCE_WORDS) - 1})")
        words.append(SOURCE_WORDS[index])
    return words


def _parse_phrase(words: Sequence[str], start: int) -> tuple[list[tuple[str, int]], bool, int]:
    """The noun phrase at ``start``: its target words with their source positions, its number, where it ends."""
    if start >= len(words) or words[start] not in _ARTICLES:
        raise ValueError(f"expected a determiner (the, a, some) at word {start} of {' '.join(words)!r}")
    end = start + 1
    while end < len(words) and words[end] in _ADJECTIVES:
        end += 1
    if end >= len(words) or words[end] not in _NOUN_OF:
        raise ValueError(f"expected a noun at word {end} of {' '.join(words)!r}")
    stem, plural = _NOUN_OF[words[end]]
    if words[start] == ("a" if plural else "some"):
        raise ValueError(f"{words[start]!r} cannot go with {words[end]!r} in {' '.join(words)!r}")
    adjectives = [(_ADJECTIVES[words[i]] + ("e" if plural else "a"), i) for i in range(end - 1, start, -1)]
    target = [(stem + ("n" if plural else ""), end), *adjectives, (_ARTICLES[words[start]], start)]
    return target, plural, end + 1


def _translate(words: Sequence[str]) -> tuple[list[str], tuple[int, ...]]:
    """Target words and alignment of a sentence ``subject verb object [preposition phrase]``."""
    subject, plural, i = _parse_phrase(words, 0)
    if i >= len(words) or words[i] not in _VERBS:
        raise ValueError(f"expected a verb at word {i} of {' '.join(words)!r}")
    verb = (_VERBS[words[i]] + ("un" if plural else "u"), i)
    obj, _, i = _parse_phrase(words, i + 1)
    phrase = []
    if i < len(words):
        if words[i] not in _PREPOSITIONS:
            raise ValueError(f"expected a preposition or the end at word {i} of {' '.join(words)!r}")
        noun_phrase, _, end = _parse_phrase(words, i + 1)
        phrase = [*noun_phrase, (_PREPOSITIONS[words[i]], i)]
        i = end
    if i != len(words):
        raise ValueError(f"unexpected words after the sentence ends: {' '.join(words[i:])!r}")
    pairs = subject + phrase + obj + [verb]
    return [w for w, _ in pairs], tuple(s for _, s in pairs)

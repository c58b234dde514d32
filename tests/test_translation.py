"""attnlib.data.translation_task: a seeded, tokenised translation task with reordering, agreement and alignment."""

import pytest

from attnlib import data
from attnlib.data import NUM_SPECIAL, translation
from attnlib.data.translation import SOURCE_WORDS, TARGET_WORDS


def words(dataset, tokens):
    return dataset.to_text(tokens).split()


def test_the_task_is_seeded_distinct_and_tokenised():
    dataset = data.translation_task(400, seed=0)
    assert len(dataset) == 400 and len({e.source for e in dataset}) == 400
    assert dataset.examples == data.translation_task(400, seed=0).examples
    assert dataset.examples != data.translation_task(400, seed=1).examples
    assert dataset.vocab_size == NUM_SPECIAL + len(SOURCE_WORDS) + len(TARGET_WORDS)
    assert len(SOURCE_WORDS) >= 50 and not set(SOURCE_WORDS) & set(TARGET_WORDS)  # two languages, one vocabulary
    source_ids = range(NUM_SPECIAL, NUM_SPECIAL + len(SOURCE_WORDS))
    for example in dataset:
        assert set(example.source) <= set(source_ids) and not set(example.target) & set(source_ids)
        assert len(example.target) == len(example.source)  # one target word per source word
    lengths = {len(e.source) for e in dataset}
    assert min(lengths) == 5 and max(lengths) == 14 and len(lengths) == 10  # variable lengths: 5 to 14 words


def test_a_sentence_translates_as_the_module_says():
    source = data.translation_tokens("the big dog saw a small cat near the king")
    dataset = data.translation_task(1)
    assert dataset.to_text(data.reference_translation(source)) == "kado tora ko raku ko pe miso pika na vidu"
    assert data.translation_alignment(source) == (2, 1, 0, 9, 8, 7, 6, 5, 4, 3)
    plural = data.translation_tokens("some happy tall wolves fed the children")
    assert dataset.to_text(data.reference_translation(plural)) == "garon vele fele na beton ko nutrun"


def test_alignment_is_a_permutation_that_reorders_and_points_at_the_translated_word():
    dataset = data.translation_task(300, seed=2)
    lexicon = {**translation._ADJECTIVES, **translation._VERBS, **translation._PREPOSITIONS}
    reordered = 0
    for example in dataset:
        alignment = data.translation_alignment(example.source)
        source, target = words(dataset, example.source), words(dataset, example.target)
        assert sorted(alignment) == list(range(len(source)))  # every source word translated exactly once
        assert alignment[-1] == next(i for i, w in enumerate(source) if w in translation._VERBS)  # the verb last
        reordered += list(alignment) != sorted(alignment)
        for t, s in enumerate(alignment):
            word = source[s]
            if word in translation._ARTICLES:
                assert target[t] == translation._ARTICLES[word]
            elif word in translation._NOUN_OF:
                assert target[t].rstrip("n") == translation._NOUN_OF[word][0].rstrip("n")
            else:
                assert target[t].startswith(lexicon[word])
    assert reordered == len(dataset)  # no sentence keeps its order


def test_verbs_agree_with_the_subject_and_adjectives_with_their_noun():
    dataset = data.translation_task(500, seed=3)
    plural_nouns = {plural for _, plural in translation._NOUNS}
    for example in dataset:
        source, target = words(dataset, example.source), words(dataset, example.target)
        alignment = data.translation_alignment(example.source)
        subject_plural = next(w for w in source if w in translation._NOUN_OF) in plural_nouns
        assert target[-1].endswith("un") == subject_plural  # the verb: "-u" or "-un"
        for t, s in enumerate(alignment):
            if source[s] in translation._ADJECTIVES:
                noun = next(w for w in source[s:] if w in translation._NOUN_OF)  # the noun it describes
                assert target[t].endswith("e") == (noun in plural_nouns)


def test_no_noun_or_adjective_occurs_twice_in_a_sentence():
    dataset = data.translation_task(500, max_adjectives=4, seed=6)
    lemma = {form: singular for singular, plural in translation._NOUNS for form in (singular, plural)}
    for example in dataset:
        content = [lemma.get(w, w) for w in words(dataset, example.source)
                   if w in lemma or w in translation._ADJECTIVES]
        assert len(content) == len(set(content))


def test_held_out_sentences_never_appear_in_training():
    train, validation, test = data.split_dataset(data.translation_task(2_000, seed=4), (0.8, 0.1, 0.1), seed=4)
    assert not {e.source for e in train} & ({e.source for e in validation} | {e.source for e in test})


def test_the_options_shape_the_sentences():
    short = data.translation_task(200, max_adjectives=0, phrase_probability=0.0, seed=5)
    assert {len(e.source) for e in short} == {5}
    long = data.translation_task(200, max_adjectives=4, phrase_probability=1.0, seed=5)
    assert min(len(e.source) for e in long) == 8 and max(len(e.source) for e in long) > 14


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(num_examples=0), ValueError, "num_examples must be >= 1"),
    (dict(num_examples=10, max_adjectives=5), ValueError, "at most 4"),
    (dict(num_examples=10, max_adjectives=-1), ValueError, "max_adjectives must be >= 0"),
    (dict(num_examples=10, phrase_probability=1.5), ValueError, r"phrase_probability must be a number in \[0, 1\]"),
    (dict(num_examples=50_000, max_adjectives=0, phrase_probability=0.0), ValueError, "only 40320 exist"),
    (dict(num_examples=10, seed=-1), ValueError, "seed"),
    (dict(num_examples=2.5), TypeError, "num_examples must be an int"),
])
def test_bad_arguments_are_explained(kwargs, error, message):
    with pytest.raises(error, match=message):
        data.translation_task(**kwargs)


@pytest.mark.parametrize("sentence, message", [
    ("the dog saw", "expected a determiner"),
    ("the dog saw the", "expected a noun"),
    ("a dogs saw the cat", "'a' cannot go with 'dogs'"),
    ("the dog cat saw the cat", "expected a verb"),
    ("the dog saw the cat the", "expected a preposition or the end"),
    ("the dog saw the cat near the bird near", "unexpected words"),
    ("the dog ate the cat", "'ate' is not an English word"),
])
def test_ungrammatical_sentences_are_explained(sentence, message):
    with pytest.raises(ValueError, match=message):
        data.translation_tokens(sentence)


def test_target_tokens_are_not_sources():
    source = data.translation_tokens("the dog saw the cat")
    with pytest.raises(ValueError, match="not an English word"):
        data.translation_alignment(data.reference_translation(source))

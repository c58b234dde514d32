"""Greedy decoding and beam search: per-sequence EOS, max_length, beam 1 = greedy, beam >= greedy, exact scores."""

import itertools
import math

import pytest
import torch

import attnlib
from attnlib import Transformer, TransformerConfig, beam_search, greedy_decode
from attnlib.data import BOS, EOS, PAD
from attnlib.decoding import Hypotheses, beam_step, length_penalty


class TableModel(torch.nn.Module):
    """A stand-in for an encoder–decoder whose next-token logits are a fixed random function of
    (source, prefix): every hypothesis has an exact log-probability we can enumerate."""

    def __init__(self, vocab=5, seed=0, sharpness=2.0):
        super().__init__()
        self.vocab, self.seed, self.sharpness = vocab, seed, sharpness

    def encode(self, source):
        return source[..., None].float()  # (B, S, 1): the "memory" is the source itself

    def logits(self, source, prefix):
        key = hash((self.seed, tuple(source), tuple(prefix))) % (2**31)
        return torch.randn(self.vocab, generator=torch.Generator().manual_seed(key)) * self.sharpness  # (V,)

    def decode(self, target_input, memory, memory_mask):
        sources = memory[..., 0].long().tolist()
        rows = [torch.stack([self.logits(src, prefix[: t + 1]) for t in range(len(prefix))])
                for src, prefix in zip(sources, target_input.tolist())]
        return torch.stack(rows)  # (B, T, V)


def sequence_log_prob(model, source_row, tokens):
    """log p(tokens | source) under a TableModel, the sum over steps."""
    total, prefix = 0.0, [BOS]
    for token in tokens:
        log_probs = torch.log_softmax(model.logits(source_row, prefix), dim=-1)
        total += log_probs[token].item()
        prefix.append(token)
    return total


def best_by_enumeration(model, source_row, max_length, alpha):
    """The best score over every possible output: finished ones (… EOS) and unfinished ones of max_length."""
    symbols = [t for t in range(model.vocab) if t not in (PAD, BOS, EOS)]
    best = -math.inf
    for n in range(max_length + 1):
        for body in itertools.product(symbols, repeat=n):
            for tokens in ([*body, EOS],) if n < max_length else ([*body],):
                score = sequence_log_prob(model, source_row, tokens) / length_penalty(len(tokens), alpha)
                best = max(best, score)
    return best


class EndingTransformer(Transformer):
    """A random Transformer whose EOS grows likelier with every step, sooner for shorter sources:
    its sentences end at different steps, and every probability is still the network's own."""

    def decode(self, target_input, memory, memory_mask, return_weights=False):
        logits = super().decode(target_input, memory, memory_mask)  # (B, T, V)
        steps = torch.arange(target_input.shape[1], dtype=logits.dtype)  # (T,)
        source_lengths = memory_mask.flatten(1).sum(dim=1, keepdim=True)  # (B, 1)
        ramp = 2.0 * (steps[None, :] - source_lengths)  # (B, T)
        return torch.cat([logits[..., :EOS], logits[..., EOS:EOS + 1] + ramp[..., None], logits[..., EOS + 1:]], -1)


def random_transformer(seed=0, vocab=19):
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=vocab, d_model=16, num_heads=2, num_encoder_layers=1,
                               num_decoder_layers=2, d_ff=32, dropout=0.1, max_length=40)
    return EndingTransformer(config)


def sources(seed=0, vocab=19):
    g = torch.Generator().manual_seed(seed)
    source = torch.randint(3, vocab, (5, 6), generator=g)  # (B, S)
    source[1, 3:] = PAD
    source[4, 1:] = PAD
    return source


def teacher_forced_log_probs(model, source, tokens, lengths):
    """Sum of log p(token) for the written tokens, with the model reading its own output."""
    target_input = torch.cat([torch.full((len(source), 1), BOS), tokens[:, :-1]], dim=1)  # (B, L)
    with torch.no_grad():
        log_probs = torch.log_softmax(model.eval()(source, target_input), dim=-1)  # (B, L, V)
    picked = log_probs.gather(2, tokens.clamp_min(0)[..., None])[..., 0]  # (B, L)
    written = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]  # (B, L)
    return (picked * written).sum(dim=1)


def check_layout(result: Hypotheses, max_length):
    """EOS at most once per row, PAD only after it, lengths count through EOS, nothing beyond max_length."""
    assert result.tokens.shape[1] <= max_length
    for row, length in zip(result.tokens.tolist(), result.lengths.tolist()):
        assert 1 <= length <= max_length
        assert PAD not in row[:length] and BOS not in row
        assert all(t == PAD for t in row[length:])
        if EOS in row:
            assert row.index(EOS) == length - 1  # it stopped at its first EOS
        else:
            assert length == max_length  # it ran out of room
    torch.testing.assert_close(result.scores, result.log_probs / length_penalty(result.lengths.float(), 0.6))


# ----- greedy decoding -------------------------------------------------------------------------
def test_greedy_stops_each_sequence_at_its_eos_and_never_runs_past_max_length():
    class Counting(TableModel):  # sentence b writes b tokens, then EOS
        def logits(self, source, prefix):
            logits = torch.zeros(self.vocab)
            logits[EOS if len(prefix) > source[0] - 3 else 3] = 10.0
            return logits

    source = torch.tensor([[3], [4], [5], [6], [9]])  # sentences of 0, 1, 2, 3 and 6 tokens before EOS
    result = greedy_decode(Counting(), source, max_length=4)
    check_layout(result, 4)
    assert result.lengths.tolist() == [1, 2, 3, 4, 4]
    assert result.finished.tolist() == [True, True, True, True, False]
    assert result.sequences() == [(), (3,), (3, 3), (3, 3, 3), (3, 3, 3, 3)]
    assert result.tokens.tolist()[0] == [EOS, PAD, PAD, PAD]
    assert beam_search(Counting(), source, max_length=4).sequences() == result.sequences()


def test_greedy_scores_are_the_models_log_probabilities():
    model = random_transformer()
    source = sources()
    result = greedy_decode(model, source, max_length=12)
    check_layout(result, 12)
    assert len(set(result.lengths.tolist())) > 1  # sentences ended at different steps
    torch.testing.assert_close(result.log_probs, teacher_forced_log_probs(model, source, result.tokens,
                                                                          result.lengths))


def test_decoding_runs_in_eval_mode_and_restores_the_mode():
    model = random_transformer().train()  # dropout 0.1: decoding in training mode would be random
    source = sources()
    first, second = greedy_decode(model, source, max_length=8), greedy_decode(model, source, max_length=8)
    assert torch.equal(first.tokens, second.tokens) and model.training
    beam_search(model.eval(), source, max_length=8)
    assert not model.training


def test_default_max_length_is_the_source_length_plus_50():
    class Never(TableModel):  # never writes EOS
        def logits(self, source, prefix):
            logits = torch.zeros(self.vocab)
            logits[3] = 5.0
            return logits

    result = greedy_decode(Never(), torch.tensor([[3, 4]]))
    assert result.lengths.tolist() == [52] and not result.finished.any()


# ----- beam search --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("keep_greedy", [False, True])
def test_beam_size_one_is_greedy(seed, keep_greedy):
    model, source = random_transformer(seed), sources(seed)
    greedy = greedy_decode(model, source, max_length=10)
    beam = beam_search(model, source, beam_size=1, max_length=10, keep_greedy=keep_greedy)
    assert torch.equal(beam.tokens, greedy.tokens) and torch.equal(beam.lengths, greedy.lengths)
    torch.testing.assert_close(beam.log_probs, greedy.log_probs)
    torch.testing.assert_close(beam.scores, greedy.scores)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("beam_size", [2, 3, 5])
def test_beam_search_never_scores_below_greedy(seed, beam_size):
    model, source = TableModel(vocab=6, seed=seed, sharpness=1.0), torch.arange(3, 11)[:, None]  # 8 sentences
    greedy = greedy_decode(model, source, max_length=5)
    beam = beam_search(model, source, beam_size=beam_size, max_length=5)
    check_layout(beam, 5)
    assert (beam.scores >= greedy.scores - 1e-6).all()


def test_beam_scores_are_the_models_log_probabilities():
    model, source = random_transformer(3), sources(3)
    beam = beam_search(model, source, beam_size=4, max_length=12, keep_greedy=False)
    check_layout(beam, 12)
    torch.testing.assert_close(beam.log_probs, teacher_forced_log_probs(model, source, beam.tokens, beam.lengths))
    assert (beam.scores >= greedy_decode(model, source, max_length=12).scores - 1e-6).all()


@pytest.mark.parametrize("seed", range(4))
def test_a_wide_beam_finds_the_best_translation(seed):
    model, source, alpha = TableModel(vocab=5, seed=seed), torch.arange(3, 9)[:, None], 0.6
    beam = beam_search(model, source, beam_size=64, max_length=4, alpha=alpha, keep_greedy=False)
    check_layout(beam, 4)
    for row, score in zip(source.tolist(), beam.scores.tolist()):
        assert math.isclose(score, best_by_enumeration(model, row, 4, alpha), rel_tol=1e-5, abs_tol=1e-5)


def test_beam_search_beats_greedy_where_the_likely_first_word_leads_nowhere():
    class Garden(TableModel):
        """First token 3 (p 0.55) or 4 (0.45); after 3 every continuation is a coin toss, after 4 EOS is sure."""

        def logits(self, source, prefix):
            logits = torch.full((self.vocab,), -20.0)
            if len(prefix) == 1:
                logits[3], logits[4] = math.log(0.55), math.log(0.45)
            elif prefix[1] == 4:
                logits[EOS] = 0.0
            else:
                logits[[3, 4, EOS]] = 0.0
            return logits

    source = torch.tensor([[3]])
    greedy = greedy_decode(Garden(), source, max_length=3, alpha=0.0)
    beam = beam_search(Garden(), source, beam_size=2, max_length=3, alpha=0.0)
    assert greedy.sequences() == [(3,)] and beam.sequences() == [(4,)]
    assert math.isclose(greedy.log_probs.item(), math.log(0.55 / 3), rel_tol=1e-5)
    assert math.isclose(beam.log_probs.item(), math.log(0.45), rel_tol=1e-5)


def test_the_length_penalty_favours_longer_translations():
    class Ending(TableModel):  # EOS now (p 0.4), or one more token and then surely EOS (0.6 · 0.5)
        def logits(self, source, prefix):
            logits = torch.full((self.vocab,), -30.0)
            if len(prefix) == 1:
                logits[EOS], logits[3] = math.log(0.4), math.log(0.6)
            elif len(prefix) == 2:
                logits[EOS], logits[4] = math.log(0.5), math.log(0.5)
            else:
                logits[EOS] = 0.0
            return logits

    source = torch.tensor([[3]])
    assert beam_search(Ending(), source, beam_size=3, max_length=4, alpha=0.0).sequences() == [()]
    assert beam_search(Ending(), source, beam_size=3, max_length=4, alpha=2.0).sequences() == [(3, 4)]
    assert length_penalty(1, 0.6) == ((5 + 1) / 6) ** 0.6 == 1.0 and length_penalty(7, 0.0) == 1.0


# ----- one step --------------------------------------------------------------------------------------
def test_beam_step_keeps_the_best_candidates_over_all_hypotheses():
    g = torch.Generator().manual_seed(0)
    scores, log_probs = torch.randn(3, 4, generator=g), torch.randn(3, 4, 7, generator=g)  # (B, K), (B, K, V)
    new, beams, tokens = beam_step(scores, log_probs, 5)  # (B, 5) each
    for b in range(3):
        everything = sorted(((scores[b, k] + log_probs[b, k, v]).item(), k, v) for k in range(4) for v in range(7))
        assert [(k, v) for _, k, v in everything[::-1][:5]] == list(zip(beams[b].tolist(), tokens[b].tolist()))
    torch.testing.assert_close(new, scores.gather(1, beams) + log_probs[torch.arange(3)[:, None], beams, tokens])
    assert (new[:, :-1] >= new[:, 1:]).all()  # best first


# ----- errors ------------------------------------------------------------------------------------------
def test_bad_arguments_are_explained():
    model, source = random_transformer(), sources()
    with pytest.raises(ValueError, match="beam_size must be an int >= 1"):
        beam_search(model, source, beam_size=0)
    with pytest.raises(ValueError, match="alpha"):
        greedy_decode(model, source, alpha=-0.5)
    with pytest.raises(ValueError, match="max_length must be an int >= 1"):
        greedy_decode(model, source, max_length=0)
    with pytest.raises(TypeError, match="token ids"):
        greedy_decode(model, source.float())
    with pytest.raises(ValueError, match=r"shape \(B, S\)"):
        beam_search(model, source[0])
    with pytest.raises(TypeError, match="encode"):
        greedy_decode(torch.nn.Linear(2, 2), source)
    with pytest.raises(TypeError, match="keep_greedy"):
        beam_search(model, source, keep_greedy=1)
    with pytest.raises(ValueError, match=r"scores must be \(B, K\)"):
        beam_step(torch.zeros(2, 3), torch.zeros(2, 4, 5), 2)
    with pytest.raises(ValueError, match="beam_size must be an int from 1 to K·V = 6"):
        beam_step(torch.zeros(2, 3), torch.zeros(2, 3, 2), 7)
    assert attnlib.decoding.beam_search is beam_search

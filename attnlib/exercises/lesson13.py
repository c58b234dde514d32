"""Exercises of lesson 13 (induction heads).

13.1 ``copier_loss``: predict the mean loss of a perfect in-context copier on repeated random tokens.
13.2 ``induction_score``: the induction score of every head from its attention weights and the tokens,
     written from its definition (queries without a target left out, several targets summed).
13.3 ``induction_projections``: hand-set a layer-1 head's W_Q and W_K so that it reads what a previous-token
     head wrote (K-composition) and becomes an induction head.

Each checker first looks for the classic mistakes (the first repeat counted as predictable, a duplicate-token
score instead of an induction score, the wrong denominator, key 0 counted through a wrap-around, query
and key reading the wrong slots, a softmax too soft) and names them.
"""

from __future__ import annotations

import math
import operator

import torch

from ._core import Exercise, Failure, Trial, close, comparable, query_key_weights


# ----- the checker's own reference (not attnlib's: a learner's cell could rebind that) ----------------
def _targets(tokens: torch.Tensor, *, include_self: bool = False, wrap: bool = False) -> torch.Tensor:
    """(B, T, T): key j is an induction target of query t (j < t, j >= 1, tokens[j-1] == tokens[t])."""
    length = tokens.shape[1]
    before = tokens.roll(1, dims=1)  # (B, T): tokens[j-1]; j = 0 wraps around
    same = tokens[:, :, None] == before[:, None, :]  # (B, T, T)
    allowed = torch.ones(length, length, dtype=torch.bool).tril(0 if include_self else -1)  # (T, T)
    if not wrap:
        allowed[:, 0] = False
    return same & allowed


def _duplicates(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, T): key j < t holds the same token as query t (an earlier occurrence itself)."""
    same = tokens[:, :, None] == tokens[:, None, :]  # (B, T, T)
    return same & torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril(-1)


def _score(weights: torch.Tensor, targets: torch.Tensor, *, every_query: bool = False,
           per_sequence: bool = False) -> torch.Tensor:
    """Mean over queries (with a target, unless every_query) of the weight on the targets: (H,)."""
    on = (weights * targets[:, None].to(weights.dtype)).sum(-1)  # (B, H, T)
    counted = torch.ones_like(targets[..., 0]) if every_query else targets.any(-1)  # (B, T)
    counted_h = counted[:, None].to(weights.dtype)  # (B, 1, T)
    if per_sequence:
        per = (on * counted_h).sum(-1) / counted_h.sum(-1).clamp_min(1)  # (B, H)
        keep = counted.any(-1)  # (B,)
        return per[keep].mean(0)  # (H,)
    return (on * counted_h).sum((0, 2)) / counted_h.sum((0, 2))  # (H,)


def _repeated(t: Trial, batch: int, length: int, vocab: int, low: int, high: int) -> torch.Tensor:
    """(B, T) int64: blocks of distinct random tokens with periods low .. high, repeated."""
    periods = t.randint(low, high + 1, (batch,))  # (B,)
    blocks = t.rand(batch, vocab).argsort(dim=1)[:, :high]  # (B, high)
    return blocks.gather(1, torch.arange(length)[None, :] % periods[:, None])  # (B, T)


def _causal_weights(t: Trial, batch: int, heads: int, length: int, sharp: float = 2.0) -> torch.Tensor:
    scores = sharp * t.randn(batch, heads, length, length)  # (B, H, T, T)
    future = torch.ones(length, length, dtype=torch.bool).triu(1)  # (T, T)
    return scores.masked_fill(future, float("-inf")).softmax(-1)  # (B, H, T, T), rows sum to 1


# ----- 13.1 the loss of a perfect copier ------------------------------------------------------------
def _copier_loss(vocab_size: int, length: int, low: int, high: int, *, cue: bool = True, over: int | None = None,
                 log=math.log) -> float:
    """Mean loss per prediction over periods low .. high: a period P costs P·log V (P - 1 without the cue)."""
    over = length - 1 if over is None else over
    costs = [(p if cue else p - 1) * log(vocab_size) / over for p in range(low, high + 1)]
    return sum(costs) / len(costs)


def _as_number(got, what: str) -> float:
    if got is None:
        raise Failure(f"{what} is None. Did your function forget to `return` the loss?")
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise Failure(f"{what} is a tensor of shape {tuple(got.shape)}; one number was expected.")
        got = got.item()
    if isinstance(got, bool):
        raise Failure(f"{what} is {got}; a number was expected.")
    if isinstance(got, (str, bytes)):
        raise Failure(f"{what} is a {type(got).__name__} ({got!r}); a number was expected, not its text.")
    try:
        value = float(operator.index(got)) if isinstance(got, int) else float(got)
    except (TypeError, ValueError):
        raise Failure(f"{what} is a {type(got).__name__} ({got!r}); a number was expected.") from None
    if not math.isfinite(value):
        raise Failure(f"{what} is {value}; a finite number was expected.")
    return value


def _test_copier_loss(t: Trial, copier_loss) -> None:
    for V, T, low, high in ((64, 32, 6, 16), (50, 20, 3, 8), (1000, 101, 10, 10), (16, 12, 2, 9)):
        what = f"copier_loss(vocab_size={V}, length={T}, min_period={low}, max_period={high})"
        got = _as_number(t.call(copier_loss, V, T, low, high, what="copier_loss"), what)
        expected = _copier_loss(V, T, low, high)
        if math.isclose(got, expected, rel_tol=1e-6):
            continue
        log_v = math.log(V)
        mistakes = (
            (_copier_loss(V, T, low, high, cue=False), "counts the first repeated token (token 0 again, at "
             "position P) as predictable. It is a repeat, but the copier predicts it from the token before it, "
             "the last of the first pass, which it has never seen before: that prediction costs log V too"),
            (_copier_loss(V, T, low, high, over=T), "divides by length; a sequence of length T gives T - 1 "
             "predictions (the first token is never predicted)"),
            (_copier_loss(V, T, low, high, cue=False, over=T), "divides by length (a sequence of T tokens makes "
             "T - 1 predictions) and treats the first repeated token as predictable (its cue, the last token of "
             "the first pass, is new)"),
            (_copier_loss(V, T, low, high, log=math.log2), "uses log base 2; cross-entropy in PyTorch (and this "
             "lesson) is in nats, the natural log: math.log"),
            (_copier_loss(V, T, high, high), "uses max_period for every sequence; the period is drawn uniformly "
             "from min_period .. max_period, so average over them"),
            (_copier_loss(V, T, low, low), "uses min_period for every sequence; average over the periods "
             "min_period .. max_period"),
            (log_v - _copier_loss(V, T, low, high), "computes the share of predictable positions times log V; "
             "those cost nothing. The loss comes from the *unpredictable* ones"),
            (0.0, "is zero; the copier cannot guess the tokens of the first pass, which are random"),
            (log_v, "is log V, the loss of a model that copies nothing"),
        )
        for wrong, message in mistakes:
            if math.isclose(got, wrong, rel_tol=1e-6, abs_tol=1e-9) and not math.isclose(wrong, expected):
                raise Failure(f"{what} is {got:.6g}: your prediction {message}.")
        raise Failure(f"{what} is {got:.6g}, off by {got - expected:+.3g} from the exact expectation. Count, for a "
                      "sequence of period P, how many of its predictions cost log V and how many cost nothing.")


copier_loss = Exercise(
    number="13.1",
    title="the loss of a perfect copier",
    test=_test_copier_loss,
    hints=[
        "Take one sequence with period P. Positions t = 0 .. length - 2 each predict the token at t + 1, so there "
        "are length - 1 predictions. Which of them can a perfect copier get right, and which cost log V?",
        "Targets 1 .. P - 1 are new random tokens: log V each. Target P is token 0 again, but the copier predicts "
        "it from token P - 1, which it has never seen before: log V as well. From t = P on every cue has been "
        "seen, and what followed it then follows it now: loss 0.",
        "So a sequence of period P costs P · log V over length - 1 predictions. The period is uniform over "
        "min_period .. max_period: average over those values.",
        "per_period = [p * math.log(vocab_size) / (length - 1) for p in range(min_period, max_period + 1)]",
    ],
    success="the floor of pure copying: what the training loss comes down to when a model copies every repeat "
            "and guesses the rest.",
)


# ----- 13.2 the induction score -------------------------------------------------------------------
def _test_induction_score(t: Trial, induction_score) -> None:
    cases = []
    tokens = _repeated(t, 4, 12, 10, 3, 5)  # (4, 12): repeats of distinct blocks
    cases.append(("repeated blocks of distinct tokens", _causal_weights(t, 4, 3, 12), tokens))
    tokens = t.randint(0, 4, (3, 10))  # (3, 10): 4 symbols: duplicates, neighbours alike, several targets
    tokens[0, :4] = torch.tensor([1, 2, 1, 1])  # a token right after itself, a query with two targets
    tokens[2] = torch.arange(10) % 10  # a sequence in which nothing repeats: no query of it counts
    tokens[1, -1] = tokens[1, 0]  # the last token equals the first: a wrap-around would make key 0 a target
    cases.append(("random tokens from 4 symbols (duplicates, several targets)", _causal_weights(t, 3, 2, 10), tokens))
    for label, weights, tokens in cases:
        B, H, T, _ = weights.shape
        what = f"induction_score(weights, tokens) on {label}, weights of shape {(B, H, T, T)}"
        got = t.call(induction_score, weights, tokens, what="induction_score(weights, tokens)")
        expected = _score(weights, _targets(tokens))  # (H,)
        if isinstance(got, torch.Tensor):
            shape = tuple(got.shape)
            if shape == (B, H):
                raise Failure(f"{what} has shape {shape}: one score per sequence and head. Average over the "
                              f"sequences too: the result has one number per head, shape ({H},).")
            if shape in ((B, H, T), (H, T)):
                raise Failure(f"{what} has shape {shape}: a score per query. Average over the queries that have "
                              f"a target: one number per head, shape ({H},).")
        if comparable(got, expected) and not close(got, expected):
            mistakes = (
                (_score(weights, _duplicates(tokens)), "measures the weight on the earlier occurrences of the "
                 "current token itself (a duplicate-token score). An induction head looks one step further: at "
                 "the position *after* an earlier occurrence, j with tokens[j - 1] == tokens[t]"),
                (_score(weights, _targets(tokens, wrap=True)), "counts key 0 as a target when the *last* token "
                 "equals the query's: rolling the tokens wraps tokens[T - 1] around to key 0, which follows no "
                 "token. Exclude j = 0"),
                (_score(weights, _targets(tokens, include_self=True)), "counts the query itself (j = t) as a "
                 "target when the token before it is the same token; targets lie strictly before the query, "
                 "j < t"),
                (_score(weights, _targets(tokens), every_query=True), "averages over every query, also those "
                 "whose token is new (they have no target and would count as 0). Average only over the queries "
                 "that have at least one target"),
                (_score(weights, _targets(tokens), per_sequence=True), "averages each sequence's queries first "
                 "and then the sequences; the score is one mean over all (sequence, query) pairs that have a "
                 "target, so a sequence with more such queries weighs more"),
                (_score(weights.transpose(-2, -1), _targets(tokens)), "reads the weights the wrong way round: "
                 "weights[b, h, t, j] is the weight that query t (row) puts on key j (column)"),
            )
            for wrong, message in mistakes:
                if close(got, wrong) and not close(wrong, expected):
                    raise Failure(f"{what}: your score {message}.")
        t.expect_tensor(got, expected, what)

    tokens = _repeated(t, 2, 9, 8, 3, 4)  # (2, 9)
    targets = _targets(tokens).float()  # (B, T, T)
    count = targets.sum(-1, keepdim=True)  # (B, T, 1)
    perfect = torch.where(count > 0, targets / count.clamp_min(1), torch.eye(9))[:, None]  # (B, 1, T, T)
    what = "induction_score(weights, tokens) for a head that spreads each query's weight over its targets"
    got = t.call(induction_score, perfect, tokens, what="induction_score(weights, tokens)")
    t.expect_tensor(got, torch.ones(1), what + " (it must score 1)")


induction_score = Exercise(
    number="13.2",
    title="the induction score",
    test=_test_induction_score,
    hints=[
        "Start with the targets, a (B, T, T) boolean: [b, t, j] is True when key j is right after an earlier "
        "occurrence of query t's token, i.e. j < t, j >= 1 and tokens[b, j - 1] == tokens[b, t]. Broadcasting "
        "compares every query with every key at once.",
        "The token before each key: shift the tokens right by one, tokens[:, :-1] at keys 1 .. T-1. Key 0 has no "
        "token before it, so it is never a target (beware `roll`, which wraps the last token round to key 0). "
        "`torch.ones(T, T, dtype=torch.bool).tril(-1)` keeps j < t.",
        "Per sequence, head and query, the weight on the targets: (weights * targets[:, None]).sum(-1), shape "
        "(B, H, T). Then average over the (sequence, query) pairs with at least one target: sum over them and "
        "divide by how many there are, `targets.any(-1).sum()`.",
        "same = tokens[:, :, None] == previous[:, None, :]  # (B, T, T): query t's token vs the token before key j",
    ],
    success="the weight each head puts on the tokens that followed earlier occurrences of the current one.",
)


# ----- 13.3 an induction head by hand ----------------------------------------------------------------
def _stream(tokens: torch.Tensor, vocab: int, max_len: int) -> torch.Tensor:
    """[one-hot token (V) | one-hot position (max_len) | one-hot previous token (V)]: (B, T, 2V + max_len)."""
    batch, length = tokens.shape
    token = torch.nn.functional.one_hot(tokens, vocab).float()  # (B, T, V)
    position = torch.eye(max_len)[:length].expand(batch, length, max_len)  # (B, T, max_len)
    previous = torch.cat([torch.zeros(batch, 1, vocab), token[:, :-1]], dim=1)  # (B, T, V): nothing before t = 0
    return torch.cat([token, position, previous], dim=-1)  # (B, T, 2V + max_len)


def _causal_head(x: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor) -> torch.Tensor:
    q, k = x @ W_Q, x @ W_K  # (B, T, d_k) each
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, T, T)
    future = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)  # (T, T)
    return scores.masked_fill(future, float("-inf")).softmax(-1)  # (B, T, T)


def _test_induction_projections(t: Trial, induction_projections) -> None:
    for V, max_len, length in ((8, 16, 16), (12, 20, 14)):
        d_model = 2 * V + max_len
        what = f"induction_projections(vocab_size={V}, max_len={max_len})"
        W_Q, W_K = query_key_weights(t.call(induction_projections, V, max_len, what="induction_projections"), what,
                                     d_model, "2·vocab_size + max_len")
        tokens = _repeated(t, 16, length, V, 3, min(7, V))  # (B, T)
        weights = _causal_head(_stream(tokens, V, max_len), W_Q, W_K)  # (B, T, T)
        if not torch.isfinite(weights).all():
            raise Failure(f"{what} gives NaN attention weights: the scores overflow. A scale that puts the right "
                          "score about 20 above the others is plenty.")
        targets = _targets(tokens)  # (B, T, T)
        has = targets.any(-1)  # (B, T): queries whose token occurred before
        score = _score(weights[:, None], targets).item()
        if score >= 0.9:
            continue
        where = f"for sequences of {length} tokens"
        looked = weights.argmax(-1)  # (B, T)
        hit = targets.gather(2, looked[..., None])[..., 0]  # (B, T): the largest weight is on a target
        duplicates = _score(weights[:, None], _duplicates(tokens)).item()  # earlier copies of the query's token
        itself = _score(weights[:, None], _duplicates(tokens) | torch.eye(length, dtype=torch.bool)).item()
        prev = tokens.roll(1, dims=1)  # (B, T): the token before each query
        visible = torch.ones(length, length, dtype=torch.bool).tril()  # (T, T): j <= t
        same_as_previous = (tokens[:, None, :] == prev[:, :, None]) & visible  # (B, T, T): token j == token t - 1
        swapped = _score(weights[:, None], same_as_previous).item()
        if hit[has].float().mean().item() > 0.95:
            raise Failure(f"{what}: the largest weight is on the right key, but the head is too soft: it puts "
                          f"{score:.0%} of its weight on the induction targets {where} (90 % wanted). Remember "
                          "the 1/√d_k in the scores; scale W_Q (or W_K) up so the right score stands about 20 "
                          "above the others.")
        if itself > 0.5 and duplicates > 0.25:
            raise Failure(f"{what}: queries look at earlier occurrences of their own token (and at themselves): "
                          "query and key both read the current token. The key must read the *previous-token* slot "
                          "(the last vocab_size features, written by layer 0), so that key j says 'the token "
                          "before me was B'.")
        if swapped > 0.5:
            raise Failure(f"{what}: queries look at the token before them and at its earlier occurrences: the "
                          "query reads the previous-token slot and the key the token slot. Swap them: the query "
                          "says 'I am A' (token slot), the key 'the token before me was B' (previous-token slot).")
        raise Failure(f"{what}: the head puts only {score:.0%} of its weight on the induction targets {where} "
                      "(90 % wanted). Query t must match key j exactly when tokens[t] == tokens[j - 1], "
                      "whatever the positions.")


induction_projections = Exercise(
    number="13.3",
    title="an induction head by hand",
    test=_test_induction_projections,
    hints=[
        "Say in words what should match. Query t: 'I am token A'. Key j: 'the token before me was A'. Both "
        "facts are one-hot vectors already in the stream: the token slot (features 0 .. V-1) and the "
        "previous-token slot (the last V features).",
        "So W_Q copies the token slot into d_k = vocab_size features and W_K copies the previous-token slot "
        "into the same features. Then q_t · k_j = 1 exactly when tokens[t] == tokens[j - 1], and 0 otherwise; "
        "the position features get zero rows.",
        "The scores are divided by √d_k, and softmax of 1 against 0 is far from one-hot: multiply W_Q by "
        "20·√vocab_size so that the right score is 20 above the others.",
        "W_K[vocab_size + max_len:] = torch.eye(vocab_size)  # key j: the token before j",
    ],
    success="your head reads what the previous-token head wrote: K-composition, an induction head.",
)

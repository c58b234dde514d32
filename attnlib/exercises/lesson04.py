"""Exercises of lesson 04 (the bottleneck, and attention in seq2seq).

4.1 ``additive_scores``: Bahdanau's score vᵀ tanh(W_q q_t + W_k k_j) for every query t and key j.
4.2 ``attend``: masked softmax of those scores, and the weighted sum of the keys.
4.3 ``decoder_step``: one step of an attentive GRU decoder, built from a model's parts.
"""

from __future__ import annotations

import torch

from ._core import Exercise, Failure, Trial
from ..softmax import masked_softmax


# ----- 4.1 additive scores -----------------------------------------------------------------
def _reference_additive_scores(queries, keys, W_q, W_k, v):
    projected_queries = queries @ W_q.T  # (B, T, A)
    projected_keys = keys @ W_k.T  # (B, S, A)
    hidden = torch.tanh(projected_queries[:, :, None, :] + projected_keys[:, None, :, :])  # (B, T, S, A)
    return hidden @ v  # (B, T, S)


def _test_additive_scores(t: Trial, additive_scores) -> None:
    B, T, S, Dq, Dk, A = 2, 3, 5, 4, 7, 6  # all different, so a swapped axis or weight cannot slip through
    queries, keys = t.randn(B, T, Dq), t.randn(B, S, Dk)  # (B, T, Dq), (B, S, Dk)
    W_q, W_k, v = t.randn(A, Dq), t.randn(A, Dk), t.randn(A)  # (A, Dq), (A, Dk), (A,)
    expected = _reference_additive_scores(queries, keys, W_q, W_k, v)  # (B, T, S)
    what = f"additive_scores(queries {(B, T, Dq)}, keys {(B, S, Dk)}, W_q {(A, Dq)}, W_k {(A, Dk)}, v {(A,)})"
    got = t.call(additive_scores, queries, keys, W_q, W_k, v, what="additive_scores")

    if isinstance(got, torch.Tensor):
        shape = tuple(got.shape)
        if shape == (B, T, S, A):
            raise Failure(
                f"{what} has shape {shape}: one vector per (query, key) pair instead of one number. "
                "The last step, the dot product with v, is missing."
            )
        if shape == (B, T, S, 1):
            raise Failure(f"{what} has shape {shape}; expected {(B, T, S)}. Squeeze the last dimension away.")
        if shape == (B, S, T):
            raise Failure(
                f"{what} has shape {shape}, keys before queries; expected {(B, T, S)}: row t holds "
                "query t's scores against every key. Give the queries the new axis at position 2 and the "
                "keys at position 1."
            )
        comparable = shape == (B, T, S) and got.dtype == expected.dtype and got.device == expected.device
        if comparable and torch.isfinite(got.detach()).all():
            linear = (queries @ W_q.T)[:, :, None, :] + (keys @ W_k.T)[:, None, :, :]  # (B, T, S, A)
            if torch.allclose(got.detach(), linear @ v, atol=1e-4):
                raise Failure(
                    f"{what} equals vᵀ (W_q q + W_k k): the tanh is missing. Without it the score is "
                    "linear and the small network inside additive attention loses its power."
                )
            if torch.allclose(got.detach(), torch.softmax(expected, dim=-1), atol=1e-5):
                raise Failure(
                    f"{what} looks like softmax weights (each row sums to one). Return the raw scores; "
                    "turning them into weights is the next exercise."
                )
    t.expect_tensor(got, expected, what)

    # One query, one key: the formula by hand.
    q1, k1 = t.randn(1, 1, Dq), t.randn(1, 1, Dk)  # (1, 1, Dq), (1, 1, Dk)
    by_hand = torch.dot(v, torch.tanh(W_q @ q1[0, 0] + W_k @ k1[0, 0]))  # ()
    got = t.call(additive_scores, q1, k1, W_q, W_k, v, what="additive_scores")
    t.expect_tensor(got, by_hand.reshape(1, 1, 1), "additive_scores for one query and one key (B = T = S = 1)")


additive_scores = Exercise(
    number="4.1",
    title="additive scores",
    test=_test_additive_scores,
    hints=[
        "Work from the inside out. W_q has shape (A, Dq), like an nn.Linear weight, so for row vectors "
        "W_q q becomes `queries @ W_q.T`, shape (B, T, A); likewise `keys @ W_k.T` is (B, S, A).",
        "Every query must meet every key: give the projected queries a key axis and the projected keys a "
        "query axis, (B, T, 1, A) + (B, 1, S, A) broadcasts to (B, T, S, A). Then tanh, then `@ v` turns "
        "each A-vector into one number.",
        "hidden = torch.tanh((queries @ W_q.T)[:, :, None, :] + (keys @ W_k.T)[:, None, :, :])  # (B, T, S, A)\n"
        "return hidden @ v  # (B, T, S)",
    ],
    success="vᵀ tanh(W_q q_t + W_k k_j) for every query and every key at once.",
)


# ----- 4.2 attend: masked softmax and context ---------------------------------------------
def _reference_attend(scores, keys, mask):
    weights = masked_softmax(scores, mask[:, None, :])  # (B, T, S); an all-masked row is 0
    return weights @ keys, weights  # (B, T, Dk), (B, T, S)


def _unpack_pair(got, what: str):
    if got is None:
        raise Failure(f"{what} returned None. Did your function forget to `return context, weights`?")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        kind = type(got).__name__ + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else "")
        raise Failure(f"{what} returned a {kind}; expected a pair `(context, weights)`.")
    return got


def _test_attend(t: Trial, attend) -> None:
    B, T, S, Dk = 3, 2, 6, 4
    scores, keys = t.randn(B, T, S), t.randn(B, S, Dk)  # (B, T, S), (B, S, Dk)
    lengths = torch.tensor([6, 4, 1], device=t.device)  # (B,)
    mask = torch.arange(S, device=t.device)[None, :] < lengths[:, None]  # (B, S), True = real key
    expected_context, expected_weights = _reference_attend(scores, keys, mask)
    what = f"attend(scores {(B, T, S)}, keys {(B, S, Dk)}, mask {(B, S)})"
    context, weights = _unpack_pair(t.call(attend, scores, keys, mask, what="attend"), what)
    if all(isinstance(x, torch.Tensor) for x in (context, weights)):
        if tuple(context.shape) == (B, T, S) and tuple(weights.shape) == (B, T, Dk):
            raise Failure(f"{what} returned (weights, context); return them the other way round, (context, weights).")

    _expect_layout(t, weights, expected_weights, "the weights (second result)")
    w = weights.detach()  # (B, T, S)
    real = mask[:, None, :].expand(B, T, S)  # (B, T, S)
    on_padding = w.masked_fill(real, 0.0).abs().max().item()
    on_real = w.masked_fill(~real, 0.0).abs().max().item()
    if on_padding > 0 and on_real == 0:
        raise Failure(
            "the weights are zero exactly where the mask is True and positive where it is False: the mask is "
            "inverted. In this course True means 'may attend' (a real token)."
        )
    if on_padding > 0:
        raise Failure(
            f"padding got weight (up to {on_padding:.3g}); keys where the mask is False must get exactly zero "
            "weight. Set their scores to -inf (masked_fill) before the softmax."
        )
    sums = w.sum(dim=-1)  # (B, T)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
        raise Failure(
            f"each row of weights must sum to one over the real keys; the rows sum to "
            f"{[round(x, 4) for x in sums.flatten().tolist()]}. Take the softmax along the key axis (dim=-1)."
        )
    t.expect_tensor(weights, expected_weights, "the weights")
    t.expect_tensor(context, expected_context, "the context (the weighted sum of the keys)")

    # Nothing to attend to: zeros, never NaN.
    empty = mask.clone()  # (B, S)
    empty[1] = False
    expected_context, expected_weights = _reference_attend(scores, keys, empty)
    got = _unpack_pair(t.call(attend, scores, keys, empty, what="attend"), what)
    for name, value in zip(("context", "weights"), got):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and torch.isnan(value).any():
            raise Failure(
                f"when an example's mask is all False, your {name} contains NaN (the softmax of a row of -inf "
                "is 0/0). A query with nothing to attend to must get zero weights and a zero context: e.g. "
                "replace NaN with zeros, `torch.nan_to_num(weights, 0.0)`."
            )
    t.expect_tensor(got[1], expected_weights, "the weights when example 1 may attend to nothing (zeros expected)")
    t.expect_tensor(got[0], expected_context, "the context when example 1 may attend to nothing (zeros expected)")

    # Huge scores must not overflow.
    big = scores * 1000.0  # (B, T, S)
    expected_context, expected_weights = _reference_attend(big, keys, mask)
    got = _unpack_pair(t.call(attend, big, keys, mask, what="attend"), what)
    for name, value in zip(("context", "weights"), got):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise Failure(
                f"scores of size ~1000 make your {name} NaN or infinite: exp(1000) overflows. Subtract each "
                "row's largest score before exp, or use torch.softmax, which does that for you."
            )
    t.expect_tensor(got[1], expected_weights, "the weights for large scores (×1000)")


attend = Exercise(
    number="4.2",
    title="attend",
    test=_test_attend,
    hints=[
        "Two steps: weights = softmax of the scores over the keys (the last axis), with masked keys forced "
        "to weight zero; then context = weights @ keys, (B, T, S) @ (B, S, Dk) -> (B, T, Dk).",
        "The mask is (B, S) but the scores are (B, T, S): `mask[:, None, :]` is (B, 1, S) and broadcasts over "
        "the queries. Lesson 02's `attnlib.masked_softmax(scores, mask)` gives masked keys weight exactly 0 "
        "and a row with nothing to attend to all zeros (no NaN), and it subtracts the row maximum first.",
        "weights = attnlib.masked_softmax(scores, mask[:, None, :])  # (B, T, S)\n"
        "return weights @ keys, weights  # (B, T, Dk), (B, T, S)",
    ],
    success="padding gets exactly zero weight, empty rows give zeros, huge scores stay finite.",
)


# ----- 4.3 one decoder step with attention ------------------------------------------------
def _small_model(t: Trial):
    from ..seq2seq import Seq2Seq

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(4)
    model = Seq2Seq(11, embed_dim=6, hidden_dim=8, attention="additive").to(t.device)  # E + H = 14 ≠ 2H = 16
    torch.random.set_rng_state(generator_state)  # leave the learner's random stream alone
    return model


def _reference_step(model, token, state, keys, mask, *, attend_with_new_state=False, swap_input=False,
                    swap_output=False):
    """The right decoder step, or (with a flag) one of the typical mistakes, for the diagnosis."""
    embedded = model.target_embedding(token)  # (B, E)
    context, weights = model.scorer(state, keys, mask)  # (B, H), (B, S)
    if attend_with_new_state:  # the mistake of attending after the update
        new_state = model.decoder(torch.cat([embedded, context], dim=-1), state)  # (B, H)
        context, weights = model.scorer(new_state, keys, mask)  # (B, H), (B, S)
    parts = [context, embedded] if swap_input else [embedded, context]
    new_state = model.decoder(torch.cat(parts, dim=-1), state)  # (B, E + H) -> (B, H)
    parts = [context, new_state] if swap_output else [new_state, context]
    logits = model.output(torch.cat(parts, dim=-1))  # (B, 2H) -> (B, V)
    return logits, new_state, weights, context


def _test_decoder_step(t: Trial, decoder_step) -> None:
    model = _small_model(t)
    B, S, H, V = 3, 5, model.hidden_dim, model.vocab_size
    token = t.randint(3, V, (B,))  # (B,)
    state, keys = t.randn(B, H), t.randn(B, S, H)  # (B, H), (B, S, H)
    lengths = torch.tensor([5, 3, 2], device=t.device)  # (B,)
    mask = torch.arange(S, device=t.device)[None, :] < lengths[:, None]  # (B, S)
    what = f"decoder_step(model, token {(B,)}, state {(B, H)}, keys {(B, S, H)}, mask {(B, S)})"
    with torch.no_grad():
        logits_ok, state_ok, weights_ok, context_ok = _reference_step(model, token, state, keys, mask)
        got = t.call(decoder_step, model, token, state, keys, mask, what="decoder_step")
        if got is None:
            raise Failure(f"{what} returned None. Did you forget `return logits, new_state, weights`?")
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            kind = type(got).__name__ + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else "")
            raise Failure(f"{what} returned a {kind}; expected a triple `(logits, new_state, weights)`.")
        logits, new_state, weights = got

        _expect_layout(t, weights, weights_ok, "the attention weights (third result)")
        late = _reference_step(model, token, state, keys, mask, attend_with_new_state=True)[2]  # (B, S)
        if torch.allclose(weights, late, atol=1e-5) and not torch.allclose(weights, weights_ok, atol=1e-5):
            raise Failure(
                "your attention weights come from the *new* state. In Bahdanau's decoder the previous "
                "state (the `state` argument) chooses where to look; the new state is computed after that, "
                "from the previous token and the context."
            )
        t.expect_tensor(weights, weights_ok, "the attention weights, model.scorer(state, keys, mask)")

        _expect_layout(t, new_state, state_ok, "the new state (second result)")
        if torch.allclose(new_state, state, atol=1e-6):
            raise Failure("the new state equals the old one: pass [embedded token; context] through model.decoder.")
        swapped = _reference_step(model, token, state, keys, mask, swap_input=True)[1]  # (B, H)
        if torch.allclose(new_state, swapped, atol=1e-5):
            raise Failure(
                "the decoder cell got [context; embedded token]; it reads them the other way round: "
                "torch.cat([embedded, context], dim=-1)."
            )
        t.expect_tensor(new_state, state_ok, "the new state, model.decoder([embedded; context], state)")

        _expect_layout(t, logits, logits_ok, "the logits (first result)")
        swapped = _reference_step(model, token, state, keys, mask, swap_output=True)[0]  # (B, V)
        if torch.allclose(logits, swapped, atol=1e-5):
            raise Failure(
                "model.output got [context; new state]; it reads them the other way round: "
                "torch.cat([new_state, context], dim=-1)."
            )
        from_old_state = model.output(torch.cat([state, context_ok], dim=-1))  # (B, V)
        if torch.allclose(logits, from_old_state, atol=1e-5):
            raise Failure("the logits come from the old state; use the new state that model.decoder returned.")
        t.expect_tensor(logits, logits_ok, "the logits, model.output([new_state; context])")


def _expect_layout(t: Trial, got, like: torch.Tensor, what: str) -> None:
    """``got`` must be a finite tensor with the type, shape, dtype and device of ``like`` (values not compared)."""
    t.expect_tensor(got, torch.zeros_like(like), what, atol=float("inf"))


decoder_step = Exercise(
    number="4.3",
    title="decoder step",
    test=_test_decoder_step,
    hints=[
        "Three moves, in Bahdanau's order: (1) the previous state chooses where to look: "
        "`context, weights = model.scorer(state, keys, mask)`; (2) the GRU cell reads the previous token and "
        "that context: `model.decoder(torch.cat([embedded, context], -1), state)`; (3) the output layer reads "
        "the new state and the context.",
        "The previous token becomes a vector with `model.target_embedding(token)`, shape (B, E). "
        "Concatenate along the last axis (dim=-1): [embedded; context] is (B, E + H), [new_state; context] "
        "is (B, 2H).",
        "embedded = model.target_embedding(token)  # (B, E)\n"
        "context, weights = model.scorer(state, keys, mask)  # (B, H), (B, S)\n"
        "new_state = model.decoder(torch.cat([embedded, context], dim=-1), state)  # (B, H)\n"
        "logits = model.output(torch.cat([new_state, context], dim=-1))  # (B, V)\n"
        "return logits, new_state, weights",
    ],
    success="the same step as attnlib's Seq2Seq decoder: attend with the old state, update, predict.",
)

"""attnlib.Seq2Seq: shapes for each attention switch, padding, greedy decoding, input checks."""

import pytest
import torch

import attnlib
from attnlib import data
from attnlib.seq2seq import EncoderMemory

KINDS = ("none", "additive", "dot")
VOCAB = data.NUM_SPECIAL + 10


def model(kind, seed=0, **sizes):
    torch.manual_seed(seed)
    sizes = {"embed_dim": 8, "hidden_dim": 12, **sizes}
    return attnlib.Seq2Seq(VOCAB, attention=kind, **sizes).eval()


def examples():
    """A short example, and longer ones to pad it against."""
    short = data.Example((3, 7, 5), (5, 7, 3))
    long_1 = data.Example((4, 4, 9, 8, 12, 6, 3), (3, 6, 12, 8, 9, 4, 4))
    long_2 = data.Example((11, 10, 5, 5, 6), (6, 5, 5, 10, 11))
    return short, long_1, long_2


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_of_forward_and_greedy_decode(kind):
    batch = data.collate(examples())
    net = model(kind)
    logits = net(batch.source, batch.source_mask, batch.target_input)
    assert logits.shape == (3, 8, VOCAB)  # (B, T, V): T = longest target + EOS
    tokens, weights = net.greedy_decode(batch.source, batch.source_mask, max_length=9)
    assert tokens.dtype == torch.long and tokens.shape[0] == 3 and 1 <= tokens.shape[1] <= 9
    if kind == "none":
        assert weights is None
    else:
        assert weights.shape == (3, tokens.shape[1], 7)  # (B, L, S)


def test_a_bad_switch_is_a_value_error():
    with pytest.raises(ValueError, match=r"attention must be one of \('none', 'additive', 'dot'\), got 'bahdanau'"):
        attnlib.Seq2Seq(VOCAB, embed_dim=8, hidden_dim=12, attention="bahdanau")
    with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
        attnlib.Seq2Seq(VOCAB, embed_dim=8, hidden_dim=0)
    with pytest.raises(ValueError, match="attention_dim must be a positive int or None, got 0"):
        attnlib.Seq2Seq(VOCAB, embed_dim=8, hidden_dim=12, attention_dim=0)
    with pytest.raises(ValueError, match="vocab_size must be larger than the special tokens"):
        attnlib.Seq2Seq(2, embed_dim=8, hidden_dim=12)


def test_the_models_differ_only_by_the_scorer():
    counts = {kind: sum(p.numel() for p in model(kind, hidden_dim=12, attention_dim=10).parameters()) for kind in KINDS}
    assert counts["dot"] - counts["none"] == 2 * 12 * 10  # W_q and W_k
    assert counts["additive"] - counts["dot"] == 10  # v
    names = {kind: {n for n, _ in model(kind).named_parameters() if not n.startswith("scorer.")} for kind in KINDS}
    assert names["none"] == names["additive"] == names["dot"]


@pytest.mark.parametrize("kind", KINDS)
def test_padding_never_changes_outputs_at_real_positions(kind):
    net = model(kind)
    short = examples()[0]
    alone = data.collate([short])
    batch = data.collate(list(examples()))  # the short example padded to length 7 (source) and 8 (target)
    assert batch.source.shape[1] > alone.source.shape[1] and batch.target_input.shape[1] > alone.target_input.shape[1]
    T = alone.target_input.shape[1]

    logits_alone = net(alone.source, alone.source_mask, alone.target_input)  # (1, T, V)
    logits_batch = net(batch.source, batch.source_mask, batch.target_input)  # (3, T', V)
    torch.testing.assert_close(logits_batch[:1, :T], logits_alone, atol=1e-5, rtol=1e-5)

    tokens_alone, weights_alone = net.greedy_decode(alone.source, alone.source_mask, max_length=6)
    tokens_batch, weights_batch = net.greedy_decode(batch.source, batch.source_mask, max_length=6)
    L = tokens_alone.shape[1]
    assert torch.equal(tokens_batch[:1, :L], tokens_alone)
    if kind != "none":
        S = alone.source.shape[1]
        torch.testing.assert_close(weights_batch[:1, :L, :S], weights_alone, atol=1e-5, rtol=1e-5)
        assert torch.all(weights_batch[0, :, S:] == 0)  # the padding of row 0 is never looked at


@pytest.mark.parametrize("kind", KINDS)
def test_the_summary_is_the_state_after_the_last_real_token(kind):
    net = model(kind)
    batch = data.collate(list(examples()))
    memory = net.encode(batch.source, batch.source_mask)
    for row, example in enumerate(examples()):
        alone = torch.tensor([example.source])  # (1, n)
        states, final = net.encoder(net.source_embedding(alone))  # (1, n, H), (1, 1, H)
        n = len(example.source)
        torch.testing.assert_close(memory.summary[row], final[0, 0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(memory.states[row, :n], states[0], atol=1e-6, rtol=1e-5)
        assert torch.all(memory.states[row, n:] == 0)


@pytest.mark.parametrize("kind", ["additive", "dot"])
def test_greedy_decode_feeds_back_its_own_tokens(kind):
    """Teacher forcing on the greedy output reproduces the greedy choices and weights."""
    net = model(kind)
    batch = data.collate(list(examples()))
    tokens, weights = net.greedy_decode(batch.source, batch.source_mask, max_length=6)
    bos = torch.full((3, 1), data.BOS)
    fed = torch.cat([bos, tokens[:, :-1]], dim=1)  # (B, L)
    logits = net(batch.source, batch.source_mask, fed)  # (B, L, V)
    finished_before = torch.cumsum(tokens == data.EOS, dim=1) - (tokens == data.EOS).long() > 0  # (B, L)
    assert torch.equal(logits.argmax(-1)[~finished_before], tokens[~finished_before])
    real = (~finished_before)[:, :, None]  # (B, L, 1)
    sums = weights.sum(-1)  # (B, L)
    torch.testing.assert_close(sums[~finished_before], torch.ones(int((~finished_before).sum())))
    assert torch.all(weights.masked_fill(real, 0) == 0)


def test_greedy_decode_stops_at_eos_and_pads_after_it():
    net = model("additive")
    batch = data.collate(list(examples()))
    with torch.no_grad():
        net.output.weight.zero_()
        net.output.bias.zero_()
        net.output.bias[data.EOS] = 5.0  # every row says EOS at once
    tokens, weights = net.greedy_decode(batch.source, batch.source_mask, max_length=9)
    assert tokens.tolist() == [[data.EOS]] * 3 and weights.shape == (3, 1, 7)

    with torch.no_grad():
        net.output.bias[data.EOS] = 0.0
        net.output.bias[5] = 5.0  # every row says symbol 5 forever
    plain_step = net.step

    def row_0_stops_at_step_2(token, state, memory):
        logits, state, weights = plain_step(token, state, memory)
        calls.append(1)
        if len(calls) == 2:
            logits = logits.clone()
            logits[0, data.EOS] = 100.0
        return logits, state, weights

    calls = []
    net.step = row_0_stops_at_step_2
    tokens, weights = net.greedy_decode(batch.source, batch.source_mask, max_length=4)
    assert tokens.tolist() == [[5, data.EOS, data.PAD, data.PAD], [5, 5, 5, 5], [5, 5, 5, 5]]
    assert torch.all(weights[0, 2:] == 0) and torch.all(weights[1:].sum(-1) > 0.99)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    net = model(kind).train()
    batch = data.collate(list(examples()))
    logits = net(batch.source, batch.source_mask, batch.target_input)
    loss = torch.nn.functional.cross_entropy(logits[batch.target_mask], batch.target_output[batch.target_mask])
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_few_steps_of_training_lower_the_loss():
    torch.manual_seed(0)
    train = data.copy_task(64, min_length=1, max_length=4, seed=1)
    batch = data.collate(list(train))
    net = model("additive").train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)

    def loss():
        logits = net(batch.source, batch.source_mask, batch.target_input)
        return torch.nn.functional.cross_entropy(logits[batch.target_mask], batch.target_output[batch.target_mask])

    first = loss().item()
    for _ in range(30):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert loss().item() < 0.6 * first


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_autocast_runs_without_nan(kind):
    net = model(kind)
    batch = data.collate(list(examples()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(batch.source, batch.source_mask, batch.target_input)
        tokens, weights = net.greedy_decode(batch.source, batch.source_mask, max_length=5)
    assert torch.isfinite(logits.float()).all()
    if weights is not None:
        assert torch.isfinite(weights).all()


def test_step_with_a_handmade_memory_matches_forward():
    net = model("dot")
    batch = data.collate(list(examples()))
    memory = net.encode(batch.source, batch.source_mask)
    assert isinstance(memory, EncoderMemory) and memory.projected.shape == (3, 7, 12)
    logits, _, _ = net.step(batch.target_input[:, 0], memory.summary, memory)
    torch.testing.assert_close(logits, net(batch.source, batch.source_mask, batch.target_input[:, :1])[:, 0])


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda b: dict(source=b.source.float()), TypeError, r"source must hold token ids as a torch.long tensor"),
        (lambda b: dict(source=b.source[0]), ValueError, r"source must have shape \(B, S\), got shape \(7,\)"),
        (lambda b: dict(source=b.source + 20), ValueError, r"source holds token ids in \[20, 32\].*0\.\.12"),
        (lambda b: dict(source_mask=b.source_mask.long()), TypeError, r"source_mask must be a boolean tensor"),
        (lambda b: dict(source_mask=b.source_mask[:, :5]), ValueError, r"source_mask must have the shape of source"),
        (lambda b: dict(source_mask=b.source_mask.flip(1)), ValueError, r"right padding"),
        (lambda b: dict(source_mask=b.source_mask & False), ValueError, r"at least one real token.*3 empty row"),
        (lambda b: dict(target_input=b.target_input[:2]), ValueError, r"same batch size"),
        (lambda b: dict(target_input=b.target_input[0]), ValueError, r"target_input must have shape \(B, T\)"),
    ],
)
def test_input_errors_name_the_problem(change, error, match):
    net = model("additive")
    batch = data.collate(list(examples()))
    arguments = dict(source=batch.source, source_mask=batch.source_mask, target_input=batch.target_input)
    arguments.update(change(batch))
    with pytest.raises(error, match=match):
        net(**arguments)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_greedy_decode_needs_a_positive_max_length(bad):
    net = model("none")
    batch = data.collate(list(examples()))
    with pytest.raises(ValueError, match="max_length must be a positive int"):
        net.greedy_decode(batch.source, batch.source_mask, bad)


# ----- forward does at once what step does step by step --------------------------------------
def step_by_step(net, source, source_mask, target_input):
    """Teacher forcing written with the public step(), one call per target position."""
    memory = net.encode(source, source_mask)
    state, logits = memory.summary, []
    for t in range(target_input.shape[1]):
        step_logits, state, _ = net.step(target_input[:, t], state, memory)
        logits.append(step_logits)
    return torch.stack(logits, dim=1)  # (B, T, V)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_equals_step_by_step_values_and_gradients(kind):
    batch = data.collate(list(examples()))
    fast, slow = model(kind).train(), model(kind).train()  # the same weights
    args = (batch.source, batch.source_mask, batch.target_input)
    weights = torch.randn(batch.target_input.shape + (VOCAB,))  # (B, T, V): a loss that reaches every logit
    ((fast(*args) * weights).sum()).backward()
    ((step_by_step(slow, *args) * weights).sum()).backward()
    torch.testing.assert_close(fast(*args), step_by_step(slow, *args), atol=1e-5, rtol=1e-5)
    for (name, a), (_, b) in zip(fast.named_parameters(), slow.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", ["additive", "dot"])
def test_the_memory_masks_the_scores_with_a_bias_and_projects_the_keys_once(kind):
    net = model(kind)
    batch = data.collate(list(examples()))
    memory = net.encode(batch.source, batch.source_mask)
    assert memory.score_bias.shape == batch.source_mask.shape
    assert torch.all(memory.score_bias[batch.source_mask] == 0)
    assert torch.all(memory.score_bias[~batch.source_mask] == float("-inf"))
    torch.testing.assert_close(memory.projected, net.scorer.project_keys(memory.states))
    by_hand = EncoderMemory(memory.states, memory.mask, memory.summary)  # no projection, no bias: the checked path
    state = torch.randn(3, 12)
    for a, b in zip(net.context(state, memory), net.context(state, by_hand)):
        torch.testing.assert_close(a, b)


def test_the_model_without_attention_has_no_scorer_and_no_projection():
    net = model("none")
    batch = data.collate(list(examples()))
    memory = net.encode(batch.source, batch.source_mask)
    assert not hasattr(net, "scorer") and memory.projected is None and memory.score_bias is None
    context, weights = net.context(torch.randn(3, 12), memory)
    assert weights is None and torch.equal(context, memory.summary)

"""Exercises of lesson 11 (making attention fast).

11.1 ``kv_cache_bytes``: the memory of a KV cache, derived as a count and checked against real caches.
11.2 ``pool_kv_heads``: turn a multi-head layer into a grouped-query one by averaging the key and value
     heads of each group (Ainslie et al. 2023).
11.3 ``merge_attention``: attention over two parts of the keys, merged into attention over all of them
     from each part's output and log-sum-exp (what split-key kernels such as flash-decoding do).

Each checker first looks for the classic mistakes (keys but not values, bits for bytes, num_heads for
num_kv_heads; the two halves simply averaged, exp(lse) overflowing, NaN for a query that sees nothing; the
heads grouped round-robin, the queries pooled too, the biases forgotten) and names them.
"""

from __future__ import annotations


import torch

from ._core import Exercise, Failure, Trial, close, comparable, whole_number


# ----- 11.1 the memory of a KV cache --------------------------------------------------------------
def _cache_bytes(n_layer, batch, length, num_heads, num_kv_heads, d_head, bytes_per_number) -> int:
    return 2 * n_layer * batch * length * num_kv_heads * d_head * bytes_per_number


def _measured_bytes(n_layer, batch, length, num_heads, num_kv_heads, d_head, dtype) -> int:
    """Fill real KV caches of a small GPT and add up their bytes."""
    from ..gpt import GPT
    from ..kv_cache import KVCache

    torch.manual_seed(0)
    model = GPT(7, length, n_layer, num_heads, num_heads * d_head, num_kv_heads=num_kv_heads).to(dtype).eval()
    caches = [KVCache(length) for _ in model.blocks]
    with torch.no_grad():
        model(torch.zeros(batch, length, dtype=torch.long), caches=caches)
    return sum(cache.nbytes for cache in caches)


def _test_cache_bytes(t: Trial, kv_cache_bytes) -> None:
    measured = ((3, 5, 7, 12, 6, 8, torch.float32),  # every factor different, so each mistake has its own count
                (2, 3, 10, 4, 2, 4, torch.float32), (1, 1, 6, 2, 2, 8, torch.float32), (3, 2, 5, 6, 1, 2, torch.bfloat16))
    large = ((32, 1, 4096, 32, 8, 128, 2), (12, 8, 1024, 12, 12, 64, 4), (80, 4, 8192, 64, 8, 128, 2))
    cases = [(*c[:6], torch.empty(0, dtype=c[6]).element_size(), c[6]) for c in measured] + [(*c, None) for c in large]
    for L, B, T, H, H_kv, d, nbytes, dtype in cases:
        what = (f"kv_cache_bytes(n_layer={L}, batch={B}, length={T}, num_heads={H}, num_kv_heads={H_kv}, "
                f"d_head={d}, bytes_per_number={nbytes})")
        got = whole_number(t.call(kv_cache_bytes, L, B, T, H, H_kv, d, nbytes, what="kv_cache_bytes"), what,
                           "a whole number of bytes (int)")
        expected = _cache_bytes(L, B, T, H, H_kv, d, nbytes)
        if dtype is not None:
            real = _measured_bytes(L, B, T, H, H_kv, d, dtype)
            assert real == expected, (real, expected)  # the formula is what the real caches hold
        if got == expected:
            continue
        mistakes = (
            (expected // 2, "counts the keys only; the cache keeps the values too: twice as much"),
            (expected * 8, "counts bits; bytes_per_number is already in bytes (2 for bf16/fp16, 4 for fp32)"),
            (expected // L, "forgets the layers: every layer keeps its own keys and values"),
            (expected // B, "forgets the batch: every sequence has its own cache"),
            (expected // H_kv * H, "uses num_heads; only the num_kv_heads key/value heads are cached (the query "
             "heads of a group share them)"),
            (expected // nbytes, "counts numbers, not bytes: multiply by bytes_per_number"),
            (expected // H_kv, "forgets the key/value heads: each of the num_kv_heads heads keeps d_head numbers "
             "per token"),
        )
        for wrong, message in mistakes:
            if got == wrong and wrong != expected:
                raise Failure(f"{what} is {got:,}: your count {message}.")
        raise Failure(f"{what} is {got:,}, which is off by a factor of {got / expected:.3g} from what real caches "
                      "hold. Per token and layer, the cache keeps one key and one value vector per key/value head.")


kv_cache_bytes = Exercise(
    number="11.1",
    title="the memory of a KV cache",
    test=_test_cache_bytes,
    hints=[
        "For each layer, each sequence of the batch and each cached token, the cache keeps a key and a value for "
        "every key/value head; each of them is d_head numbers of bytes_per_number bytes.",
        "With grouped-query attention only num_kv_heads heads have keys and values; the num_heads query heads "
        "share them, so num_heads does not enter the count (it is there to tempt you).",
        "per_token_and_layer = 2 * num_kv_heads * d_head * bytes_per_number  # a key and a value per KV head",
    ],
    success="what real caches hold: 2 · layers · batch · tokens · KV heads · d_head · bytes.",
)


# ----- 11.3 merging attention over two sets of keys -------------------------------------------
def _merge(out_1, lse_1, out_2, lse_2):
    lse = torch.logaddexp(lse_1, lse_2)  # (..., Lq)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # (..., Lq)
    w_1, w_2 = torch.exp(lse_1 - safe)[..., None], torch.exp(lse_2 - safe)[..., None]  # (..., Lq, 1) each
    return w_1 * out_1 + w_2 * out_2, lse  # (..., Lq, d_v), (..., Lq)


def _halves(t: Trial, lq, lk, d, cut, shift=0.0, mask=None):
    from ..fast_attention import tiled_attention

    q, k, v = t.randn(2, lq, d), t.randn(2, lk, d), t.randn(2, lk, d)  # (B, Lq, d), (B, Lk, d) twice
    q = q * 3  # peaked weights: the halves matter unequally
    left = None if mask is None else mask[..., :cut]
    right = None if mask is None else mask[..., cut:]
    o1, l1 = tiled_attention(q, k[:, :cut], v[:, :cut], left, return_logsumexp=True)  # (B, Lq, d), (B, Lq)
    o2, l2 = tiled_attention(q, k[:, cut:], v[:, cut:], right, return_logsumexp=True)
    whole, lse = tiled_attention(q, k, v, mask, return_logsumexp=True)
    return (o1, l1 + shift, o2, l2 + shift), (whole, lse + shift)


def _unpack_pair(got, what):
    if got is None:
        raise Failure(f"{what} is None. Did your function forget to `return out, lse`?")
    if isinstance(got, torch.Tensor):
        raise Failure(f"{what} returned one tensor; return the pair (out, lse): the merged output and its "
                      "log-sum-exp, so that the result can be merged again with a third part.")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Failure(f"{what} returned a {type(got).__name__}; expected a pair (out, lse).")
    return got


def _test_merge(t: Trial, merge_attention) -> None:
    mask = torch.ones(2, 5, 12, dtype=torch.bool)
    mask[0, 1, :7] = False  # query 1 of sequence 0 sees nothing in the first part
    mask[1, 2] = False  # query 2 of sequence 1 sees nothing at all
    cases = (("two parts of 6 and 10 keys", dict(lq=4, lk=16, d=5, cut=6)),
             ("two parts of 9 and 3 keys", dict(lq=3, lk=12, d=4, cut=9)),
             ("scores shifted by +1000 (log-sum-exp of about 1000)", dict(lq=4, lk=10, d=3, cut=4, shift=1000.0)),
             ("a mask under which some queries see no key of one part, or of both", dict(lq=5, lk=12, d=4, cut=7,
                                                                                       mask=mask)))
    for name, options in cases:
        parts, (whole, lse) = _halves(t, **options)
        what = f"merge_attention(...) for {name}"
        got = _unpack_pair(t.call(merge_attention, *parts, what="merge_attention"), what)
        out, got_lse = got
        if comparable(out, whole) and not close(out, whole, atol=1e-4):
            if close(out, (parts[0] + parts[2]) / 2, atol=1e-4):
                raise Failure(f"{what}: the output is the plain average of the two parts. Each part must count in "
                              "proportion to its share of the softmax mass, exp(lse_part - lse_all).")
            if close(out, _merge(parts[2], parts[1], parts[0], parts[3])[0], atol=1e-4):
                raise Failure(f"{what}: the two parts' weights are swapped; out_1 goes with exp(lse_1 - lse).")
        if isinstance(out, torch.Tensor) and out.is_floating_point() and not torch.isfinite(out).all():
            reason = ("exp(lse) overflows for large scores: subtract the merged lse (or the larger of the two) "
                      "before exponentiating" if "1000" in name else "a query that sees no key in a part has "
                      "lse = -inf there; with lse = -inf in both, exp(-inf - (-inf)) is NaN: give such a query "
                      "zeros")
            raise Failure(f"{what}: the output contains NaN or infinity. {reason}.")
        t.expect_tensor(out, whole, f"{what}: out", atol=1e-4)
        if comparable(got_lse, lse) and not close(got_lse, lse, atol=1e-4):
            if close(got_lse, torch.maximum(parts[1], parts[3])):
                raise Failure(f"{what}: lse is the larger of the two; the merged log-sum-exp is "
                              "log(exp(lse_1) + exp(lse_2)), torch.logaddexp(lse_1, lse_2).")
            if close(got_lse, parts[1] + parts[3]):
                raise Failure(f"{what}: lse is lse_1 + lse_2, the log of a product; the masses add: "
                              "log(exp(lse_1) + exp(lse_2)).")
        if isinstance(got_lse, torch.Tensor) and got_lse.shape == lse.shape and bool(torch.isnan(got_lse).any()):
            raise Failure(f"{what}: lse contains NaN; a query that sees no key at all keeps lse = -inf.")
        same_inf = isinstance(got_lse, torch.Tensor) and got_lse.shape == lse.shape and torch.equal(
            torch.isinf(got_lse), torch.isinf(lse))
        finite = torch.isfinite(lse)
        if same_inf:
            t.expect_tensor(got_lse[finite], lse[finite], f"{what}: lse (where finite)", atol=1e-4)
        else:
            t.expect_tensor(got_lse, lse, f"{what}: lse")


merge_attention = Exercise(
    number="11.3",
    title="merge attention over two sets of keys",
    test=_test_merge,
    hints=[
        "Each part's output is already normalised by its own softmax sum, exp(lse_part). Over all keys the sum is "
        "exp(lse_1) + exp(lse_2), so part 1's share of the softmax is exp(lse_1) / (exp(lse_1) + exp(lse_2)).",
        "Compute the merged lse first, with torch.logaddexp (it never overflows), then the weights exp(lse_1 - lse) "
        "and exp(lse_2 - lse). A query that sees no key at all has lse = -inf everywhere: give it zeros, not "
        "exp(-inf - (-inf)) = NaN.",
        "lse = torch.logaddexp(lse_1, lse_2)  # (..., Lq): log(exp(lse_1) + exp(lse_2))",
    ],
    success="attention over all the keys from its two parts, stable for huge scores and for queries that see nothing.",
)


# ----- 11.2 multi-head → grouped-query by mean-pooling ------------------------------------------
def _pool(mha, num_kv_heads):
    from ..multi_head import MultiHeadAttention

    d, H, d_head = mha.d_model, mha.num_heads, mha.d_head
    group = H // num_kv_heads
    pooled = MultiHeadAttention(d, H, num_kv_heads=num_kv_heads, bias=mha.in_proj_bias is not None)
    w = mha.in_proj_weight.detach()
    w_q, w_k, w_v = w[:d], w[d:2 * d], w[2 * d:]  # (d, d) each: rows are output features, head by head
    pool = lambda m: m.reshape(num_kv_heads, group, d_head, -1).mean(dim=1).reshape(num_kv_heads * d_head, -1)  # noqa
    with torch.no_grad():
        pooled.in_proj_weight.copy_(torch.cat([w_q, pool(w_k), pool(w_v)]))
        if mha.in_proj_bias is not None:
            b = mha.in_proj_bias.detach()
            pooled.in_proj_bias.copy_(torch.cat([b[:d], pool(b[d:2 * d, None])[:, 0], pool(b[2 * d:, None])[:, 0]]))
        pooled.out_proj.load_state_dict(mha.out_proj.state_dict())
    return pooled


def _test_pool(t: Trial, pool_kv_heads) -> None:
    from ..multi_head import MultiHeadAttention

    for d, H, H_kv, bias in ((16, 4, 2, True), (24, 6, 3, True), (16, 4, 1, False), (12, 3, 3, True)):
        torch.manual_seed(int(t.randint(0, 1000, (1,))))
        mha = MultiHeadAttention(d, H, bias=bias).eval()
        if bias:
            with torch.no_grad():
                mha.in_proj_bias.normal_()  # non-zero, so a forgotten bias shows
        what = f"pool_kv_heads(a MultiHeadAttention({d}, {H}{'' if bias else ', bias=False'}), num_kv_heads={H_kv})"
        before = {k: v.clone() for k, v in mha.state_dict().items()}
        got = t.call(pool_kv_heads, mha, H_kv, what=what)
        if any(not torch.equal(before[k], v) for k, v in mha.state_dict().items()):
            raise Failure(f"{what} changed the layer it was given; build a new one and leave the original as it was.")
        if not isinstance(got, MultiHeadAttention):
            raise Failure(f"{what} returned a {type(got).__name__}; expected a new attnlib.MultiHeadAttention.")
        if got.num_kv_heads != H_kv or got.num_heads != H or got.d_model != d:
            raise Failure(f"{what} has d_model={got.d_model}, num_heads={got.num_heads}, num_kv_heads="
                          f"{got.num_kv_heads}; expected {d}, {H}, {H_kv}: "
                          f"MultiHeadAttention(d_model, num_heads, num_kv_heads=...).")
        expected = _pool(mha, H_kv)
        if (got.in_proj_bias is None) != (expected.in_proj_bias is None):
            raise Failure(f"{what}: the new layer {'has no' if got.in_proj_bias is None else 'has'} biases, unlike "
                          "the original; pass bias=... accordingly.")
        x = t.randn(2, 5, d)  # (B, L, d)
        with torch.no_grad():
            out, want = got.eval()(x, causal=True), expected(x, causal=True)  # (B, L, d) each
        if close(out, want, atol=1e-5):
            continue
        w, d_head = got.in_proj_weight.detach(), d // H
        w_k = w[d:d + H_kv * d_head]  # (H_kv·d_head, d)
        source = mha.in_proj_weight.detach()[d:2 * d].reshape(H, d_head, d)  # (H, d_head, d)
        round_robin = source.reshape(H // H_kv, H_kv, d_head, d).mean(dim=0).reshape(-1, d)
        first_of_group = source.reshape(H_kv, H // H_kv, d_head, d)[:, 0].reshape(-1, d)
        summed = source.reshape(H_kv, H // H_kv, d_head, d).sum(dim=1).reshape(-1, d)
        if H_kv < H and close(w_k, round_robin):
            raise Failure(f"{what} pools heads h, h + num_kv_heads, ... together; a group is consecutive heads: "
                          "query heads g·group .. (g+1)·group - 1 share key/value head g (attnlib.multi_head."
                          "repeat_kv_heads).")
        if H_kv < H and close(w_k, first_of_group):
            raise Failure(f"{what} keeps the first head of each group; average the group's heads instead.")
        if H_kv < H and close(w_k, summed):
            raise Failure(f"{what} sums the heads of each group; average them (divide by the group size).")
        if not close(w[:d], expected.in_proj_weight.detach()[:d]):
            raise Failure(f"{what}: the query projection W_Q changed; keep every query head as it was (only keys "
                          "and values are shared).")
        if bias and not close(got.in_proj_bias.detach(), expected.in_proj_bias.detach()):
            raise Failure(f"{what}: the weights are right but the biases are not; pool the key and value biases "
                          "the same way, and keep the query bias.")
        if not close(got.out_proj.weight.detach(), mha.out_proj.weight.detach()):
            raise Failure(f"{what}: the output projection W_O differs from the original's; copy it.")
        t.expect_tensor(out, want, f"{what}: its output on a (2, 5, {d}) input", atol=1e-5)


pool_kv_heads = Exercise(
    number="11.2",
    title="from multi-head to grouped-query attention",
    test=_test_pool,
    hints=[
        "Build MultiHeadAttention(d_model, num_heads, num_kv_heads=..., bias=...). Its in_proj_weight stacks W_Q "
        "(d_model rows), then W_K and W_V with num_kv_heads · d_head rows each. Query heads and W_O stay as they "
        "were; only the key and value heads are pooled.",
        "In the original, rows h·d_head .. (h+1)·d_head - 1 of W_K belong to head h. A group is consecutive heads: "
        "reshape W_K to (num_kv_heads, group, d_head, d_model) and average over the group axis; the same for W_V "
        "and for the biases. Copy with torch.no_grad() and .copy_().",
        "pooled_k = w_k.reshape(num_kv_heads, group, d_head, d_model).mean(dim=1).reshape(-1, d_model)",
    ],
    success="a grouped-query layer whose shared key/value heads are the means of their groups.",
)

"""attnlib.train.label_smoothed_cross_entropy equals torch's cross_entropy(label_smoothing=ε), padding ignored."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnlib.data import PAD
from attnlib.train import label_smoothed_cross_entropy


def logits_and_targets(seed=0, B=3, T=6, V=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 3  # (B, T, V)
    targets = torch.randint(1, V, (B, T), generator=g)  # (B, T)
    targets[0, 4:] = PAD  # padding at the end of two sequences
    targets[2, 1:] = PAD
    return logits, targets


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.25, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_torch_cross_entropy_with_label_smoothing(smoothing, reduction):
    logits, targets = logits_and_targets()
    logits.requires_grad_(True)
    ours = label_smoothed_cross_entropy(logits, targets, smoothing=smoothing, reduction=reduction)
    theirs = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), label_smoothing=smoothing, ignore_index=PAD,
                             reduction=reduction)
    torch.testing.assert_close(ours.flatten(), theirs.flatten())
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), logits)[0],
                               torch.autograd.grad(theirs.sum(), logits)[0])


def test_padding_counts_for_nothing():
    logits, targets = logits_and_targets(1)
    loss = label_smoothed_cross_entropy(logits, targets)
    changed = logits.clone()
    changed[targets == PAD] = torch.randn(int((targets == PAD).sum()), 11) * 50  # anything at the padding
    torch.testing.assert_close(label_smoothed_cross_entropy(changed, targets), loss)
    per_position = label_smoothed_cross_entropy(logits, targets, reduction="none")  # (B, T)
    assert (per_position[targets == PAD] == 0).all()
    torch.testing.assert_close(loss, per_position.sum() / (targets != PAD).sum())  # the mean over real tokens
    assert torch.isnan(label_smoothed_cross_entropy(logits, torch.zeros_like(targets)))  # like torch: 0 / 0


def test_the_loss_is_smallest_at_the_smoothed_target_and_equals_its_entropy():
    V, eps, y = 7, 0.1, 3
    q = torch.full((V,), eps / V)
    q[y] += 1 - eps  # the smoothed target distribution
    best = label_smoothed_cross_entropy(q.log()[None], torch.tensor([y]), smoothing=eps)
    entropy = -(q * q.log()).sum()
    torch.testing.assert_close(best, entropy)
    one_hot = torch.full((V,), -30.0)
    one_hot[y] = 30.0  # nearly certain of the right token: plain cross-entropy ~ 0, smoothed is worse
    confident = label_smoothed_cross_entropy(one_hot[None], torch.tensor([y]), smoothing=eps)
    assert confident > best + 1.0
    assert label_smoothed_cross_entropy(one_hot[None], torch.tensor([y]), smoothing=0.0) < 1e-6
    assert math.isclose(entropy.item(), -(0.9 + eps / V) * math.log(0.9 + eps / V)
                        - (V - 1) * (eps / V) * math.log(eps / V), rel_tol=1e-6)


def test_other_shapes_ignore_index_and_half_precision():
    g = torch.Generator().manual_seed(2)
    logits, targets = torch.randn(10, 5, generator=g), torch.randint(0, 5, (10,), generator=g)  # (N, V), (N,)
    torch.testing.assert_close(label_smoothed_cross_entropy(logits, targets, smoothing=0.2, ignore_index=-100),
                               F.cross_entropy(logits, targets, label_smoothing=0.2))
    half = label_smoothed_cross_entropy(logits.bfloat16(), targets, ignore_index=4)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), F.cross_entropy(logits, targets, label_smoothing=0.1, ignore_index=4),
                               atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("args, kwargs, error, message", [
    ((torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)), {}, ValueError, "share their leading shape"),
    ((torch.randn(2, 5), torch.zeros(2)), {}, TypeError, "class ids"),
    ((torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, dtype=torch.long)), {}, TypeError, "floating-point"),
    ((torch.randn(2, 5), torch.tensor([1, 5])), {}, ValueError, r"class ids in \[0, 5\)"),
    ((torch.randn(2, 5), torch.tensor([1, 2])), {"smoothing": 1.5}, ValueError, "smoothing must be"),
    ((torch.randn(2, 5), torch.tensor([1, 2])), {"reduction": "avg"}, ValueError, "reduction must be"),
])
def test_bad_arguments_are_explained(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        label_smoothed_cross_entropy(*args, **kwargs)

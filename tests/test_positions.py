"""attnlib.sinusoidal_positional_encoding: the public contract of lesson 07."""

import math

import pytest
import torch

import attnlib


def test_layout_is_the_papers():
    pe = attnlib.sinusoidal_positional_encoding(50, 16)
    assert pe.shape == (50, 16) and pe.dtype == torch.float32
    for p in (0, 1, 7, 49):
        for i in range(8):
            angle = p / 10000 ** (2 * i / 16)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_each_feature_pair_lies_on_the_unit_circle():
    pe = attnlib.sinusoidal_positional_encoding(100, 8)
    torch.testing.assert_close(pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2, torch.ones(100, 4))


@pytest.mark.parametrize("args, error, message", [
    ((10, 7), ValueError, "d_model must be even, got 7"),
    ((10, 0), ValueError, "d_model must be >= 2"),
    ((-1, 8), ValueError, "max_len must be >= 0"),
    ((10.0, 8), TypeError, "max_len must be an int"),
])
def test_bad_arguments_are_explained(args, error, message):
    with pytest.raises(error, match=message):
        attnlib.sinusoidal_positional_encoding(*args)

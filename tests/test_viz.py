"""The attention heatmap helper."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from attnlib.viz import plot_attention  # noqa: E402


def test_heatmap_has_title_labels_and_ticks():
    weights = torch.softmax(torch.randn(1, 3, 4), dim=-1)  # (1, Lq, Lk): leading 1 squeezed
    ax = plot_attention(weights, ["a", "b", "c"], ["w", "x", "y", "z"], title="demo")
    assert ax.get_title() == "demo"
    assert ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["w", "x", "y", "z"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    image = ax.get_images()[0].get_array()
    assert image.shape == (3, 4)
    plt.close("all")


def test_heatmap_rejects_bad_shapes_and_labels():
    with pytest.raises(ValueError, match=r"weights must have shape \(Lq, Lk\), got shape \(2, 3, 4\)"):
        plot_attention(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="key_labels has 2 entries but the weights have 4"):
        plot_attention(torch.rand(3, 4), key_labels=["a", "b"])
    plt.close("all")


def test_colour_scale_is_fixed_from_zero_to_one_so_panels_compare():
    faint = torch.full((3, 3), 1 / 3)  # an untrained model: spread-out weights
    ax = plot_attention(faint)
    assert ax.images[0].get_clim() == (0.0, 1.0)  # not stretched to look as bright as a one-hot row
    assert ax.figure.axes[-1].get_ylabel() == "weight"  # with a colour bar
    ax = plot_attention(faint, vmax=None)
    assert ax.images[0].get_clim() == (0.0, pytest.approx(1 / 3))
    plt.close("all")

"""attnlib.data.images: the same-colour task of lesson 12, its dataset, splits and batches."""

import pytest
import torch

from attnlib import data
from attnlib.data.images import PALETTE, SHAPES, shape_masks


@pytest.fixture(scope="module")
def dataset():
    return data.same_colour_task(2_000, seed=0)


def test_images_labels_and_objects_have_the_documented_shapes(dataset):
    n = len(dataset)
    assert n == 2_000
    assert dataset.images.shape == (n, 3, 16, 16) and dataset.images.dtype == torch.float32
    assert dataset.labels.shape == (n,) and dataset.labels.dtype == torch.long
    assert dataset.masks.shape == (n, 2, 16, 16) and dataset.masks.dtype == torch.bool
    assert dataset.boxes.shape == (n, 2, 4) and dataset.colours.shape == dataset.shapes.shape == (n, 2)
    assert 0.0 <= dataset.images.min() and dataset.images.max() <= 1.0
    assert dataset.class_names == ("different", "same") and len(dataset.colour_names) == 6


def test_labels_are_balanced_and_say_whether_the_colours_agree(dataset):
    assert dataset.labels.sum().item() == 1_000
    torch.testing.assert_close(dataset.labels, (dataset.colours[:, 0] == dataset.colours[:, 1]).long())


def test_no_single_object_tells_the_label(dataset):
    """Every colour, in either place, is about as common among 'same' images as among 'different' ones."""
    for k in range(2):
        for colour in range(6):
            chosen = dataset.colours[:, k] == colour
            assert abs(dataset.labels[chosen].float().mean().item() - 0.5) < 0.1
    for shape in range(len(SHAPES)):
        assert abs(dataset.labels[dataset.shapes[:, 0] == shape].float().mean().item() - 0.5) < 0.1


def test_pixels_are_the_objects_in_their_colours_on_black(dataset):
    palette = torch.tensor([rgb for _, rgb in PALETTE])
    for i in range(0, 2_000, 97):
        expected = torch.zeros(3, 16, 16)
        for k in range(2):
            expected[:, dataset.masks[i, k]] = palette[dataset.colours[i, k]][:, None]
            top, left, bottom, right = dataset.boxes[i, k].tolist()
            inside = torch.zeros(16, 16, dtype=torch.bool)
            inside[top:bottom, left:right] = True
            assert dataset.masks[i, k].any() and not (dataset.masks[i, k] & ~inside).any()
            assert torch.equal(dataset.masks[i, k][top:bottom, left:right], shape_masks(3)[dataset.shapes[i, k]])
        torch.testing.assert_close(dataset.images[i], expected)


def test_objects_are_in_distant_cells_in_reading_order(dataset):
    cells = torch.div(dataset.boxes[..., :2], 4, rounding_mode="floor")  # (N, 2, 2): cell row, column
    distance = (cells[:, 0] - cells[:, 1]).abs().amax(dim=-1)  # (N,)
    assert distance.min().item() >= 2
    order = cells[..., 0] * 4 + cells[..., 1]  # (N, 2)
    assert (order[:, 0] < order[:, 1]).all()
    assert len({tuple(c.tolist()) for c in order}) > 50  # many placements


def test_object_patches_mark_the_patches_holding_object_pixels(dataset):
    patches = dataset.object_patches(4)  # (N, 16): each object lies inside one 4×4 cell
    assert patches.shape == (2_000, 16) and (patches.sum(-1) == 2).all()
    small = dataset.object_patches(2)  # (N, 64)
    for i in range(0, 2_000, 151):
        occupied = dataset.masks[i].any(0).reshape(8, 2, 8, 2).any(3).any(1).flatten()
        assert torch.equal(small[i], occupied)
    with pytest.raises(ValueError, match="must divide the image size"):
        dataset.object_patches(3)


def test_configurations_are_distinct_and_splits_hold_out_whole_images(dataset):
    keys = {tuple(image.flatten().tolist()) for image in dataset.images}
    assert len(keys) == len(dataset)
    train, validation, test = dataset.split((0.8, 0.1, 0.1), seed=0)
    assert (len(train), len(validation), len(test)) == (1_600, 200, 200)
    seen = {tuple(image.flatten().tolist()) for image in train.images}
    assert not any(tuple(image.flatten().tolist()) in seen for image in test.images)
    assert train.name == "same_colour/train" and 0.4 < test.labels.float().mean().item() < 0.6


def test_the_task_is_reproducible():
    a, b = data.same_colour_task(50, seed=3), data.same_colour_task(50, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, data.same_colour_task(50, seed=4).images)


def test_epochs_give_fresh_shuffles_of_every_image():
    small = data.same_colour_task(10, seed=0)
    epochs = small.epochs(4, seed=0)
    first, second = list(epochs()), list(epochs())
    assert [len(y) for _, y in first] == [4, 4, 2]
    assert first[0][0].shape == (4, 3, 16, 16)
    seen = torch.cat([x for x, _ in first]).flatten(1)
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, small.images.flatten(1).tolist()))
    assert not torch.equal(first[0][0], second[0][0])
    in_order = list(small.epochs(10, shuffle=False)())
    assert torch.equal(in_order[0][0], small.images) and torch.equal(in_order[0][1], small.labels)


def test_larger_boards_and_objects():
    big = data.same_colour_task(100, grid=8, cell_size=8, object_size=6, num_colours=8, seed=1)
    assert big.images.shape == (100, 3, 64, 64) and big.colours.max() < 8
    assert (big.object_patches(8).sum(-1) == 2).all()


def test_shape_masks_are_four_different_shapes():
    for size in (2, 3, 5, 7):
        masks = shape_masks(size)
        assert masks.shape == (4, size, size) and masks.any(-1).any(-1).all()
    assert len({tuple(m.flatten().tolist()) for m in shape_masks(3)}) == 4


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(num_examples=1), ValueError, "num_examples must be >= 2"),
    (dict(num_examples=10.0), TypeError, "num_examples must be an int"),
    (dict(grid=1), ValueError, "grid must be >= 2"),
    (dict(object_size=5), ValueError, "object_size=5 does not fit in a cell of cell_size=4"),
    (dict(num_colours=1), ValueError, "num_colours must be >= 2"),
    (dict(num_colours=9), ValueError, "more than the palette's 8 colours"),
    (dict(min_distance=4), ValueError, "no two cells of a 4×4 grid are min_distance=4 cells apart"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(num_examples=2_000, grid=2, cell_size=1, min_distance=1), ValueError, "cannot make"),
])
def test_bad_arguments_are_refused(kwargs, error, message):
    arguments = {"num_examples": 10, **kwargs}
    with pytest.raises(error) as caught:
        data.same_colour_task(arguments.pop("num_examples"), **arguments)
    assert message in str(caught.value)


@pytest.mark.parametrize("fractions, message", [((0.5, 0.5), "three numbers"), ((0.9, 0.0999, 0.0001), "would be empty")])
def test_bad_splits_are_refused(fractions, message):
    with pytest.raises(ValueError, match=message):
        data.same_colour_task(20, seed=0).split(fractions)

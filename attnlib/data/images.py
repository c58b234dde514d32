"""Small generated images whose label is a relation between two distant objects (lesson 12).

``same_colour_task`` draws two shapes (a square, a plus, a cross or a ring) in two cells of
a grid that are at least ``min_distance`` cells apart, each in a colour of a small palette.
The label asks one question about the *pair*: **are the two shapes the same colour?**
Nothing about one object alone says anything about the label: every colour, shape and place
is equally likely in both classes. So a model must bring the two objects together, wherever
they are, which is what attention over image patches can do and a model that looks at each
patch on its own cannot (lesson 12 proves it).

Images are ``(N, 3, H, W)`` float32 in [0, 1] with ``H = W = grid · cell_size``, on a black
background. The dataset also says where every object is (pixel masks and boxes), so that a
lesson can check where a model's attention goes. The configurations (cells, offsets,
shapes, colours) of one dataset are distinct, so :meth:`ImageDataset.split` gives held-out
splits in which no image of one split appears in another.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .examples import _check_fractions, _require_enough, _require_int, _require_seed

PALETTE = (  # name, (red, green, blue): far apart, so that "same colour" is never a judgement call
    ("red", (0.90, 0.15, 0.15)),
    ("green", (0.15, 0.75, 0.20)),
    ("blue", (0.25, 0.40, 1.00)),
    ("yellow", (0.95, 0.85, 0.15)),
    ("magenta", (0.85, 0.25, 0.85)),
    ("cyan", (0.15, 0.85, 0.90)),
    ("orange", (0.95, 0.55, 0.10)),
    ("white", (0.95, 0.95, 0.95)),
)
SHAPES = ("square", "plus", "cross", "ring")
CLASS_NAMES = ("different", "same")  # label 0: different colours, label 1: the same colour


# ----- the dataset ------------------------------------------------------------------------
@dataclass
class ImageDataset:
    """Images, their labels, and where their objects are.

    * ``images`` ``(N, C, H, W)`` float32 in [0, 1]; ``labels`` ``(N,)`` long, an index
      into ``class_names``;
    * ``masks`` ``(N, K, H, W)`` bool: the pixels of object k; ``boxes`` ``(N, K, 4)``
      long: its box ``(top, left, bottom, right)``, bottom and right exclusive;
    * ``colours`` and ``shapes`` ``(N, K)`` long: each object's index into
      ``colour_names`` / ``shape_names``.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    colours: torch.Tensor
    shapes: torch.Tensor
    class_names: tuple[str, ...] = CLASS_NAMES
    colour_names: tuple[str, ...] = tuple(name for name, _ in PALETTE)
    shape_names: tuple[str, ...] = SHAPES

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices, name: str | None = None) -> "ImageDataset":
        """The examples at ``indices`` (a list or a 1-D long tensor), in that order."""
        index = torch.as_tensor(indices, dtype=torch.long)  # (n,)
        return ImageDataset(name or self.name, self.images[index], self.labels[index], self.masks[index],
                            self.boxes[index], self.colours[index], self.shapes[index], self.class_names,
                            self.colour_names, self.shape_names)

    def split(self, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> tuple["ImageDataset", "ImageDataset", "ImageDataset"]:
        """Shuffle and cut into (train, validation, test) by ``fractions``; each image lands in one split."""
        fractions = _check_fractions(fractions)
        _require_seed(seed)
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        num_train = round(fractions[0] * len(order))
        num_validation = round(fractions[1] * len(order))
        cuts = [0, num_train, num_train + num_validation, len(order)]
        splits = []
        for split_name, fraction, start, stop in zip(("train", "validation", "test"), fractions, cuts, cuts[1:]):
            if fraction > 0 and stop <= start:
                raise ValueError(f"the {split_name} split (fraction {fraction:g}) would be empty: the dataset has "
                                 f"only {len(order)} images; use more images or larger fractions")
            splits.append(self.subset(order[start:stop], f"{self.name}/{split_name}"))
        return tuple(splits)

    def epochs(self, batch_size: int, *, shuffle: bool = True, seed: int = 0,
               device=None) -> Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
        """For :func:`attnlib.train.fit`: each call returns one more pass of ``(images, labels)`` batches.

        Like :func:`attnlib.data.epochs`: pass ``e`` (from 0) is shuffled with seed ``seed + e``;
        the last batch may be smaller. Batches are ``(B, C, H, W)`` float32 and ``(B,)`` long.
        """
        _require_int(batch_size, "batch_size", 1)
        _require_seed(seed)
        images = self.images if device is None else self.images.to(device)  # (N, C, H, W)
        labels = self.labels if device is None else self.labels.to(device)  # (N,)
        counter = itertools.count()

        def next_epoch():
            if shuffle:
                generator = torch.Generator().manual_seed(seed + next(counter))
                order = torch.randperm(len(self), generator=generator).to(images.device)  # (N,)
            else:
                order = torch.arange(len(self), device=images.device)  # (N,)
            for start in range(0, len(self), batch_size):
                chosen = order[start : start + batch_size]  # (B,)
                yield images[chosen], labels[chosen]  # (B, C, H, W), (B,)

        return next_epoch

    def object_patches(self, patch_size: int) -> torch.Tensor:
        """``(N, num_patches)`` bool: True where a patch holds a pixel of some object.

        Patches are ``patch_size × patch_size`` squares numbered row by row, as
        :func:`attnlib.vision.patchify` cuts them.
        """
        _require_int(patch_size, "patch_size", 1)
        height, width = self.images.shape[-2:]
        if height % patch_size or width % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide the image size {height}×{width}")
        occupied = self.masks.any(dim=1)  # (N, H, W): some object's pixel
        grid = occupied.reshape(len(self), height // patch_size, patch_size, width // patch_size, patch_size)
        return grid.any(dim=4).any(dim=2).flatten(1)  # (N, H/P · W/P)


# ----- the task --------------------------------------------------------------------------
def same_colour_task(num_examples: int, *, grid: int = 4, cell_size: int = 4, object_size: int | None = None,
                     num_colours: int = 6, min_distance: int = 2, seed: int = 0) -> ImageDataset:
    """Two shapes in distant cells; label 1 when they have the same colour, 0 when not.

    * the image is a ``grid × grid`` board of ``cell_size``-pixel cells (``H = W = grid ·
      cell_size``); each object lies inside one cell, at a random offset, and the two cells
      are at least ``min_distance`` cells apart along rows or columns (no two neighbours);
    * each object is one of :data:`SHAPES`, ``object_size`` pixels wide (default
      ``cell_size - 1``), drawn in one of the first ``num_colours`` colours of :data:`PALETTE`;
    * exactly half of the images (rounded down) are "same"; in the others the second colour
      is drawn from the remaining ones. Shapes, cells and offsets are uniform and
      independent of the label.

    Deterministic from ``seed``; the ``num_examples`` configurations are distinct. The
    objects are listed in reading order of their cells.
    """
    _require_int(num_examples, "num_examples", 2)
    _require_int(grid, "grid", 2)
    _require_int(cell_size, "cell_size", 1)
    if object_size is None:
        object_size = max(1, cell_size - 1)
    _require_int(object_size, "object_size", 1)
    if object_size > cell_size:
        raise ValueError(f"object_size={object_size} does not fit in a cell of cell_size={cell_size} pixels")
    _require_int(num_colours, "num_colours", 2)
    if num_colours > len(PALETTE):
        raise ValueError(f"num_colours={num_colours} is more than the palette's {len(PALETTE)} colours")
    _require_int(min_distance, "min_distance", 1)
    _require_seed(seed)
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    pairs = [(a, b) for a, b in itertools.combinations(range(len(cells)), 2)
             if max(abs(cells[a][0] - cells[b][0]), abs(cells[a][1] - cells[b][1])) >= min_distance]
    if not pairs:
        raise ValueError(f"no two cells of a {grid}×{grid} grid are min_distance={min_distance} cells apart; "
                         f"use min_distance <= {grid - 1}")
    offsets = (cell_size - object_size + 1) ** 2
    per_colouring = len(pairs) * offsets**2 * len(SHAPES) ** 2
    _require_enough(num_examples - num_examples // 2, per_colouring * num_colours * (num_colours - 1),
                    "same_colour_task (different colours)")
    _require_enough(num_examples // 2, per_colouring * num_colours, "same_colour_task (same colour)")

    rng = random.Random(seed)
    labels = [1] * (num_examples // 2) + [0] * (num_examples - num_examples // 2)
    rng.shuffle(labels)
    seen: set[tuple] = set()
    configurations = []
    slack = cell_size - object_size + 1
    for label in labels:
        while True:
            a, b = rng.choice(pairs)
            first = rng.randrange(num_colours)
            second = first if label else (first + 1 + rng.randrange(num_colours - 1)) % num_colours  # any other
            objects = tuple((cell, rng.randrange(slack), rng.randrange(slack), rng.randrange(len(SHAPES)), colour)
                            for cell, colour in ((a, first), (b, second)))
            if objects not in seen:
                seen.add(objects)
                configurations.append(objects)
                break

    config = torch.tensor(configurations, dtype=torch.long)  # (N, 2, 5): cell, dy, dx, shape, colour
    rows = torch.div(config[..., 0], grid, rounding_mode="floor")  # (N, 2)
    cols = config[..., 0] % grid  # (N, 2)
    top = rows * cell_size + config[..., 1]  # (N, 2)
    left = cols * cell_size + config[..., 2]  # (N, 2)
    shapes, colours = config[..., 3], config[..., 4]  # (N, 2) each
    masks = _draw_masks(top, left, shapes, object_size, grid * cell_size)  # (N, 2, H, W)
    palette = torch.tensor([rgb for _, rgb in PALETTE[:num_colours]])  # (num_colours, 3)
    paint = palette[colours]  # (N, 2, 3)
    images = (masks[:, :, None].float() * paint[..., None, None]).sum(dim=1)  # (N, 3, H, W): the objects never overlap
    boxes = torch.stack([top, left, top + object_size, left + object_size], dim=-1)  # (N, 2, 4)
    return ImageDataset("same_colour", images, torch.tensor(labels), masks, boxes, colours, shapes,
                        colour_names=tuple(name for name, _ in PALETTE[:num_colours]))


def shape_masks(size: int) -> torch.Tensor:
    """``(len(SHAPES), size, size)`` bool: a square, a plus, a cross (×) and a ring, ``size`` pixels wide."""
    _require_int(size, "size", 1)
    centre = (size - 1) / 2
    u = (torch.arange(size, dtype=torch.float32) - centre).abs()[:, None]  # (size, 1): distance from the middle row
    v = (torch.arange(size, dtype=torch.float32) - centre).abs()[None, :]  # (1, size): from the middle column
    width = max(0.5, size / 6)  # half the stroke of the plus and the cross
    square = torch.ones(size, size, dtype=torch.bool)  # (size, size)
    plus = (u <= width) | (v <= width)  # (size, size)
    cross = (u - v).abs() <= width  # (size, size): both diagonals
    ring = torch.maximum(u, v) > centre - max(1, size // 4)  # (size, size): the border
    return torch.stack([square, plus, cross, ring])  # (4, size, size)


def _draw_masks(top, left, shapes, size: int, image_size: int) -> torch.Tensor:
    """Pixel masks ``(N, K, H, W)`` of shapes (N, K) whose ``size``-wide boxes start at (top, left)."""
    templates = shape_masks(size).flatten()  # (S · size · size,)
    y = torch.arange(image_size)[None, None, :, None] - top[..., None, None]  # (N, K, H, 1): row inside the box
    x = torch.arange(image_size)[None, None, None, :] - left[..., None, None]  # (N, K, 1, W)
    inside = (y >= 0) & (y < size) & (x >= 0) & (x < size)  # (N, K, H, W)
    index = shapes[..., None, None] * size * size + y.clamp(0, size - 1) * size + x.clamp(0, size - 1)  # (N, K, H, W)
    return inside & templates[index]  # (N, K, H, W)

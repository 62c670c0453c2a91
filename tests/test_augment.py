"""search.augment: random crop, flip and erasing on whole [B, 1, H, W] batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from search.augment import random_crop, random_erasing, random_flip

B, H, W = 512, 28, 28


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b: int = B, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Images whose every pixel is distinct and non-zero (so zeros can only be padding or
    erasing) and whose rows are not mirror images of themselves (so a flip shows)."""
    x = torch.arange(1, b * H * W + 1, dtype=torch.float64).reshape(b, 1, H, W)
    return x.to(dtype)


AUGMENTS = {
    "crop": lambda x, g: random_crop(x, 4, g),
    "flip": random_flip,
    "erasing": lambda x, g: random_erasing(x, 0.5, g),
}


@pytest.mark.parametrize("name", sorted(AUGMENTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_and_dtype_are_kept(name, dtype):
    x = batch(8, dtype)
    out = AUGMENTS[name](x, gen())
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_a_seeded_generator_repeats_exactly_and_another_seed_differs(name):
    x = batch()
    first, again = AUGMENTS[name](x, gen(1)), AUGMENTS[name](x, gen(1))
    assert torch.equal(first, again)
    assert not torch.equal(first, AUGMENTS[name](x, gen(2)))
    assert torch.equal(x, batch())  # the input is never changed in place


# --- crop ---------------------------------------------------------------------------------------


def crop_offsets(x: torch.Tensor, out: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """The (dy, dx) window of the zero-padded image that each output image is; fails if none."""
    padded = F.pad(x, (pad, pad, pad, pad))
    found = []
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + H, dx : dx + W])
        ]
        assert len(hits) == 1, f"image {i} is no window of its padded input"
        found.append(hits[0])
    return found


def test_a_crop_is_a_window_of_the_padded_image_at_every_offset():
    pad = 2
    x = batch(200)
    offsets = crop_offsets(x, random_crop(x, pad, gen()), pad)
    # Each image moves on its own, and every offset of the 5x5 grid is drawn.
    assert {dy for dy, _ in offsets} == {dx for _, dx in offsets} == set(range(2 * pad + 1))
    assert len(set(offsets)) > 20


def test_a_crop_without_padding_changes_nothing():
    x = batch(16)
    assert torch.equal(random_crop(x, 0, gen()), x)


# --- flip ---------------------------------------------------------------------------------------


def test_a_flip_mirrors_about_half_of_the_images_left_to_right():
    x = batch(1000)
    out = random_flip(x, gen())
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))  # one or the other, always
    assert 400 < sum(mirrored) < 600
    # Left to right: the first column becomes the last, rows stay rows.
    i = mirrored.index(True)
    assert torch.equal(out[i, 0, :, -1], x[i, 0, :, 0])
    assert torch.equal(out[i, 0, 0].sort().values, x[i, 0, 0].sort().values)


# --- erasing ------------------------------------------------------------------------------------


def erased(out: torch.Tensor) -> torch.Tensor:
    """[B, H, W] masks of the pixels set to zero (the input has none)."""
    return out[:, 0] == 0


def is_rectangle(mask: torch.Tensor) -> bool:
    rows, cols = mask.any(1), mask.any(0)
    return bool(torch.equal(mask, rows[:, None] & cols[None, :]))


def test_erasing_zeroes_one_rectangle_of_the_configured_size():
    # Scale 0.5, ratio 1: a square of half the image's area, floored to whole pixels (19x19).
    x = batch(64)
    out = random_erasing(x, 1.0, gen(), scale=(0.5, 0.5), ratio=(1.0, 1.0))
    masks = erased(out)
    side = int((0.5 * H * W) ** 0.5)
    assert all(is_rectangle(m) for m in masks)
    assert masks.sum((1, 2)).tolist() == [side * side] * 64
    assert (masks.any(2).sum(1) == side).all() and (masks.any(1).sum(1) == side).all()
    assert torch.equal(out[~masks[:, None]], x[~masks[:, None]])  # the rest untouched
    # The squares are placed anywhere the image holds them, not always at one spot.
    tops = masks.any(2).float().argmax(1)
    assert len(set(tops.tolist())) > 5 and tops.max() <= H - side


def test_erasing_areas_stay_within_the_default_scale():
    x = batch(500)
    masks = erased(random_erasing(x, 1.0, gen()))
    fractions = masks.sum((1, 2)).float() / (H * W)
    assert all(is_rectangle(m) for m in masks)
    # Flooring to whole pixels only shrinks a rectangle: never above the top of (0.02, 0.25).
    assert fractions.max() <= 0.25 and fractions.min() > 0.01
    # Areas are drawn uniformly from the scale: on average (0.02 + 0.25) / 2, a little less floored.
    assert 0.10 < fractions.mean() <= (0.02 + 0.25) / 2


def test_erasing_touches_about_p_of_the_images():
    x = batch(1000)
    touched = erased(random_erasing(x, 0.3, gen())).any(2).any(1)
    assert 240 < touched.sum() < 360


def test_erasing_with_p_zero_changes_nothing():
    x = batch(64)
    assert torch.equal(random_erasing(x, 0.0, gen()), x)

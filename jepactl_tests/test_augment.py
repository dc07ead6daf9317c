"""Tests for the uint8 clip augmentations (``jepactl.data.augment``).

What pretraining relies on: one crop box and one flip decision per clip (so motion is not
distorted), crop boxes within the configured scale and aspect-ratio ranges, randomness only
from the generator passed in, uint8 in and out, and evaluation views at the reference's
positions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import RandomResizedCrop

from jepactl.data.augment import (
    eval_transform,
    hflip,
    pretrain_transform,
    random_resized_crop,
    random_resized_crop_box,
)


def _clip(t: int = 4, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (t, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def _offset_clip(t: int = 5, h: int = 60, w: int = 80, step: int = 10) -> torch.Tensor:
    """Frames that differ only by a constant: frame ``k`` is frame 0 plus ``k * step``."""
    base = torch.randint(0, 256 - step * (t - 1), (1, h, w, 3), dtype=torch.uint8)
    return torch.cat([base + k * step for k in range(t)])


# --------------------------------------------------------------------------- crop


def test_same_crop_for_every_frame() -> None:
    clip = _offset_clip()
    rng = np.random.default_rng(3)
    for _ in range(20):
        out = random_resized_crop(clip, 32, rng).int()
        for k in range(1, clip.shape[0]):
            diff = out[k] - out[0]
            assert int(diff.min()) >= 10 * k - 1 and int(diff.max()) <= 10 * k + 1


def test_pretrain_transform_same_geometry_for_every_frame() -> None:
    clip = _offset_clip()
    rng = np.random.default_rng(5)
    for _ in range(20):
        out = pretrain_transform(clip, 24, rng).int()
        for k in range(1, clip.shape[0]):
            diff = out[k] - out[0]
            assert int(diff.min()) >= 10 * k - 1 and int(diff.max()) <= 10 * k + 1


def test_crop_output_shape_dtype_layout() -> None:
    out = random_resized_crop(_clip(), 40, np.random.default_rng(0))
    assert out.shape == (4, 40, 40, 3)
    assert out.dtype == torch.uint8
    assert out.is_contiguous()


def test_crop_is_the_box_resized() -> None:
    clip = _clip(3, 50, 70)
    box = random_resized_crop_box(50, 70, np.random.default_rng(9))
    top, left, h, w = box
    out = random_resized_crop(clip, 28, np.random.default_rng(9))
    expected = F.resized_crop(clip.permute(0, 3, 1, 2), top, left, h, w, [28, 28], antialias=True)
    assert torch.equal(out, expected.permute(0, 2, 3, 1))


def test_full_box_at_native_size_is_identity() -> None:
    clip = _clip(2, 32, 32)
    out = random_resized_crop(
        clip, 32, np.random.default_rng(0), scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    assert torch.equal(out, clip)


def test_box_within_scale_and_ratio_bounds() -> None:
    rng = np.random.default_rng(11)
    height, width = 240, 320
    scale, ratio = (0.3, 1.0), (0.75, 1.35)
    areas, aspects = [], []
    for _ in range(3000):
        top, left, h, w = random_resized_crop_box(height, width, rng, scale, ratio)
        assert top >= 0 and top + h <= height and left >= 0 and left + w <= width
        areas.append(h * w / (height * width))
        aspects.append(w / h)
    # Rounding the box to whole pixels moves area and ratio by well under 1%.
    assert min(areas) >= scale[0] * 0.99 and max(areas) <= 1.0
    assert min(aspects) >= ratio[0] * 0.99 and max(aspects) <= ratio[1] * 1.01
    # The draws cover the ranges (not stuck on the fallback).
    assert min(areas) < 0.35 and max(areas) > 0.9
    assert min(aspects) < 0.8 and max(aspects) > 1.3
    # Where every box fits (no rejections), the aspect ratio is log-uniform over the range.
    log_aspects = []
    for _ in range(3000):
        _, _, h, w = random_resized_crop_box(height, width, rng, (0.1, 0.4), ratio)
        log_aspects.append(np.log(w / h))
    assert abs(np.mean(log_aspects) - np.mean(np.log(ratio))) < 0.015
    assert abs(np.std(log_aspects) - np.log(ratio[1] / ratio[0]) / np.sqrt(12)) < 0.015


def test_box_fallback_matches_torchvision() -> None:
    """An image too elongated for any try falls back to torchvision's centre crop."""
    for height, width in [(10, 1000), (1000, 10), (7, 300)]:
        ours = random_resized_crop_box(height, width, np.random.default_rng(0))
        image = torch.zeros(1, height, width)
        expected = RandomResizedCrop.get_params(image, [0.3, 1.0], [0.75, 1.35])
        assert ours == tuple(expected)


def test_crop_is_deterministic_given_the_generator() -> None:
    clip = _clip()
    a = pretrain_transform(clip, 32, np.random.default_rng(123))
    b = pretrain_transform(clip, 32, np.random.default_rng(123))
    assert torch.equal(a, b)
    rng = np.random.default_rng(123)
    outs = [pretrain_transform(clip, 32, rng) for _ in range(5)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_no_global_random_state_used() -> None:
    clip = _clip()
    torch.manual_seed(0)
    np.random.seed(0)
    a = pretrain_transform(clip, 32, np.random.default_rng(1))
    torch.manual_seed(99)
    np.random.seed(99)
    b = pretrain_transform(clip, 32, np.random.default_rng(1))
    assert torch.equal(a, b)


def test_one_frame_clip_image() -> None:
    image = _clip(1, 30, 50)
    out = pretrain_transform(image, 16, np.random.default_rng(0))
    assert out.shape == (1, 16, 16, 3)
    assert out.dtype == torch.uint8
    assert eval_transform(image, 16, views=3).shape == (3, 1, 16, 16, 3)


# --------------------------------------------------------------------------- flip


def test_hflip_probability_one_and_zero() -> None:
    clip = _clip()
    assert torch.equal(hflip(clip, np.random.default_rng(0), p=1.0), clip.flip(2))
    assert hflip(clip, np.random.default_rng(0), p=0.0) is clip


def test_hflip_consumes_one_draw_whatever_p() -> None:
    clip = _clip()
    for p in (0.0, 0.3, 1.0):
        rng = np.random.default_rng(4)
        hflip(clip, rng, p)
        reference = np.random.default_rng(4)
        reference.random()
        assert rng.random() == reference.random()


def test_hflip_rate_and_whole_clip_decision() -> None:
    clip = _offset_clip(t=3, h=8, w=10)
    rng = np.random.default_rng(8)
    flipped = 0
    for _ in range(1000):
        out = hflip(clip, rng, p=0.3)
        if torch.equal(out, clip.flip(2)):
            flipped += 1
        else:
            assert torch.equal(out, clip)
    assert 240 < flipped < 360


# --------------------------------------------------------------------------- eval


def test_eval_views_landscape_positions() -> None:
    # Short side already equals size: the views are exact slices along the width.
    clip = _clip(2, 32, 48)
    views = eval_transform(clip, 32, views=3)
    assert views.shape == (3, 2, 32, 32, 3)
    assert torch.equal(views[0], clip[:, :, 0:32])
    assert torch.equal(views[1], clip[:, :, 8:40])
    assert torch.equal(views[2], clip[:, :, 16:48])
    assert torch.equal(eval_transform(clip, 32)[0], views[1])


def test_eval_views_portrait_positions_and_odd_margin() -> None:
    clip = _clip(2, 51, 32)
    views = eval_transform(clip, 32, views=3)
    assert torch.equal(views[0], clip[:, 0:32])
    assert torch.equal(views[1], clip[:, 10:42])  # ceil(19 / 2) as V-JEPA's uniform_crop
    assert torch.equal(views[2], clip[:, 19:51])


def test_eval_resizes_short_side_like_the_reference() -> None:
    clip = _clip(3, 30, 47)
    views = eval_transform(clip, 20, views=3)
    assert views.shape == (3, 3, 20, 20, 3)
    assert views.dtype == torch.uint8
    # int(47 * 20 / 30) = 31 columns after resizing: the end view starts at column 11.
    resized = F.resize(clip.permute(0, 3, 1, 2), [20, 31], antialias=True).permute(0, 2, 3, 1)
    assert torch.equal(views[2], resized[:, :, 11:31])
    square = eval_transform(_clip(1, 40, 40), 20, views=3)
    assert torch.equal(square[0], square[1]) and torch.equal(square[1], square[2])


def test_eval_upsamples_small_clips() -> None:
    assert eval_transform(_clip(2, 12, 16), 24).shape == (1, 2, 24, 24, 3)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call",
    [
        lambda c, r: random_resized_crop(c.float(), 8, r),
        lambda c, r: random_resized_crop(c[0], 8, r),
        lambda c, r: random_resized_crop(c[:0], 8, r),
        lambda c, r: random_resized_crop(c, 0, r),
        lambda c, r: random_resized_crop(c, 8, r, scale=(0.0, 1.0)),
        lambda c, r: random_resized_crop(c, 8, r, scale=(0.8, 0.5)),
        lambda c, r: random_resized_crop(c, 8, r, scale=(0.5, 1.5)),
        lambda c, r: random_resized_crop(c, 8, r, ratio=(1.5, 0.5)),
        lambda c, r: random_resized_crop(c, 8, 0),
        lambda c, r: hflip(c, r, p=1.5),
        lambda c, r: hflip(c, None),
        lambda c, r: pretrain_transform(c, 8, r, flip_p=-0.1),
        lambda c, r: eval_transform(c, 8, views=2),
        lambda c, r: eval_transform(c, 0),
        lambda c, r: eval_transform(c.numpy(), 8),
    ],
)
def test_argument_validation(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        call(_clip(), np.random.default_rng(0))

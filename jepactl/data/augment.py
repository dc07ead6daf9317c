"""Clip augmentations on uint8 ``[T, H, W, C]`` tensors: one geometry per clip, uint8 throughout.

The reference augments decoded clips as float32 in DataLoader workers. Here clips stay uint8 end
to end: torchvision's v2 kernels have uint8 fast paths for antialiased bilinear resizing, a uint8
clip is a quarter of the bytes to move through worker queues and pinned memory, and
normalisation then happens once, on the device. A ``[T, H, W, C]`` clip permuted to
``[T, C, H, W]`` is exactly the channels-last layout those kernels are fastest on, so no copy is
made before resizing either.

Every spatial transform uses one crop box / flip decision for the whole clip, so motion is
preserved (a per-frame crop would add fake camera shake). Randomness comes only from the
``numpy.random.Generator`` passed in, so a worker that seeds its generator from (seed, step,
index) reproduces a sample exactly, whatever the process or thread.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

__all__ = [
    "eval_transform",
    "hflip",
    "pretrain_transform",
    "random_resized_crop",
    "random_resized_crop_box",
]

DEFAULT_SCALE = (0.3, 1.0)
"""Area fraction range of the pretraining crop (the reference's ``random_resize_scale``)."""

DEFAULT_RATIO = (0.75, 1.35)
"""Aspect ratio (width / height) range of the pretraining crop (``random_resize_aspect_ratio``)."""


def _check_clip(clip: torch.Tensor) -> None:
    if not isinstance(clip, torch.Tensor):
        raise ValueError(f"clip must be a torch.Tensor, got {type(clip).__name__}")
    if clip.dtype != torch.uint8 or clip.ndim != 4:
        raise ValueError(
            f"clip must be uint8 [T, H, W, C], got {clip.dtype} of shape {tuple(clip.shape)}"
        )
    if min(clip.shape) < 1:
        raise ValueError(f"clip must not be empty, got shape {tuple(clip.shape)}")


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _check_size(size: int) -> int:
    try:
        size = operator.index(size)
    except TypeError as err:
        raise ValueError(f"size must be an integer, got {size!r}") from err
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return size


def _check_range(name: str, bounds: tuple[float, float], upper: float | None) -> None:
    low, high = (float(b) for b in bounds)
    if not 0 < low <= high or (upper is not None and high > upper):
        limit = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must satisfy 0 < low <= high{limit}, got {tuple(bounds)}")


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
) -> tuple[int, int, int, int]:
    """The crop box ``(top, left, crop_height, crop_width)`` of a random resized crop.

    torchvision's ``RandomResizedCrop.get_params`` algorithm, with draws from ``rng``: up to 10
    tries of an area fraction uniform in ``scale`` and an aspect ratio log-uniform in ``ratio``
    (so 3:4 and 4:3 are equally likely), kept if the box fits; else the largest centred box
    whose aspect ratio is clamped into ``ratio``.
    """
    _check_rng(rng)
    _check_range("scale", scale, 1.0)
    _check_range("ratio", ratio, None)
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, max(1, h), max(1, w)


def random_resized_crop(
    clip: torch.Tensor,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
) -> torch.Tensor:
    """The same random crop box for every frame, resized to ``size x size`` (bilinear, antialias).

    Returns uint8 ``[T, size, size, C]``; see :func:`random_resized_crop_box` for the box.
    """
    _check_clip(clip)
    size = _check_size(size)
    _, height, width, _ = clip.shape
    top, left, h, w = random_resized_crop_box(height, width, rng, scale, ratio)
    out = F.resized_crop(
        clip.permute(0, 3, 1, 2),
        top,
        left,
        h,
        w,
        [size, size],
        interpolation=InterpolationMode.BILINEAR,
        antialias=True,
    )
    return out.permute(0, 2, 3, 1).contiguous()


def hflip(clip: torch.Tensor, rng: np.random.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror every frame left-right with probability ``p`` (one decision for the whole clip).

    Exactly one number is drawn from ``rng`` whatever ``p`` is, so changing ``p`` does not shift
    the random stream of the transforms that follow. Returns ``clip`` itself when not flipped.
    """
    _check_clip(clip)
    _check_rng(rng)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if rng.random() < p:
        return clip.flip(2)
    return clip


def pretrain_transform(
    clip: torch.Tensor,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
    flip_p: float = 0.5,
) -> torch.Tensor:
    """The reference's pretraining augmentation: random resized crop, then horizontal flip.

    Works for images as one-frame clips (``T = 1``). Returns uint8 ``[T, size, size, C]``.
    """
    return hflip(random_resized_crop(clip, size, rng, scale, ratio), rng, flip_p)


def _resize_short_side(clip_tchw: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the shorter side is ``size``; the longer one is truncated, as the reference does.

    (The reference computes ``int(W * size / min(H, W))``.)
    """
    height, width = clip_tchw.shape[-2:]
    if min(height, width) == size:
        return clip_tchw
    if height <= width:
        new_h, new_w = size, int(width * size / height)
    else:
        new_h, new_w = int(height * size / width), size
    return F.resize(
        clip_tchw, [new_h, new_w], interpolation=InterpolationMode.BILINEAR, antialias=True
    )


def eval_transform(clip: torch.Tensor, size: int, views: int = 1) -> torch.Tensor:
    """Deterministic evaluation views: uint8 ``[views, T, size, size, C]``.

    The clip is resized so its shorter side is ``size`` (bilinear, antialias), then cropped to
    ``size x size``: at the centre for ``views=1`` (the reference's protocol), or at the start,
    centre and end of the longer side for ``views=3`` (V-JEPA's ``EvalVideoTransform`` /
    ``uniform_crop``: the centre offset is ``ceil((L - size) / 2)``). A square input gives three
    identical views.
    """
    _check_clip(clip)
    size = _check_size(size)
    if views not in (1, 3):
        raise ValueError(f"views must be 1 or 3, got {views}")
    resized = _resize_short_side(clip.permute(0, 3, 1, 2), size)
    height, width = resized.shape[-2:]
    long_is_height = height > width
    extent = height if long_is_height else width
    centre = math.ceil((extent - size) / 2)
    offsets = [centre] if views == 1 else [0, centre, extent - size]
    crops = []
    for offset in offsets:
        if long_is_height:
            crop = resized[:, :, offset : offset + size, :]
        else:
            crop = resized[:, :, :, offset : offset + size]
        crops.append(crop.permute(0, 2, 3, 1))
    return torch.stack(crops)

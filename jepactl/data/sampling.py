"""Clip samplers: which frame indices a clip reads, from the frame count alone.

Pure functions of the frame count (and, for pretraining, an explicit generator), so a
DataLoader worker needs no state to reproduce a draw: the pretraining clip
(:func:`pretrain_indices`), the evaluation clip (:func:`uniform_indices`) and the first frames
(:func:`first_indices`). Cut from :mod:`jepactl.data.decode` here because they never open a
file; :mod:`jepactl.data.decode` re-exports them.
"""

from __future__ import annotations

import operator

import numpy as np

__all__ = ["first_indices", "pretrain_indices", "uniform_indices"]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if operator.index(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def pretrain_indices(
    num_frames: int, clip_len: int, stride: int, rng: np.random.Generator
) -> list[int]:
    """Pretraining clip: ``clip_len`` frames ``stride`` apart from a uniformly random start.

    The start is drawn from every position where the whole clip fits, as in the reference's
    random clip start. A video shorter than the clip's span starts at 0 and repeats its last
    frame (indices past the end are clamped), again as the reference does; no number is drawn
    from ``rng`` then.
    """
    _check_positive(num_frames=num_frames, clip_len=clip_len, stride=stride)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    span = (clip_len - 1) * stride + 1
    if num_frames < span:
        return [min(k * stride, num_frames - 1) for k in range(clip_len)]
    start = int(rng.integers(0, num_frames - span + 1))
    return [start + k * stride for k in range(clip_len)]


def uniform_indices(num_frames: int, clip_len: int) -> list[int]:
    """Evaluation clip: ``clip_len`` frames spread uniformly over the whole video.

    Exactly the reference's evaluation loader: ``linspace(0, L - 1, clip_len)`` truncated to
    integers, so the first and last frames are always included. A video with fewer frames than
    ``clip_len`` gives ``0 .. L - 1`` followed by repeats of the last frame.
    """
    _check_positive(num_frames=num_frames, clip_len=clip_len)
    if num_frames < clip_len:
        return list(range(num_frames)) + [num_frames - 1] * (clip_len - num_frames)
    return [int(x) for x in np.linspace(0, num_frames - 1, clip_len).astype(np.int64)]


def first_indices(num_frames: int, clip_len: int) -> list[int]:
    """The first ``clip_len`` frames, ``0 .. clip_len - 1`` (the reference's synthetic-motion
    scorer); a shorter video repeats its last frame."""
    _check_positive(num_frames=num_frames, clip_len=clip_len)
    return [min(i, num_frames - 1) for i in range(clip_len)]

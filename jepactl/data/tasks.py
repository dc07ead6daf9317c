"""Small labelled synthetic sets for the online probe of pretraining (:mod:`jepactl.train.monitor`).

Each task draws ``n`` clips at the recipe's frames and crop, deterministically from
``(seed, index)``, with labels balanced (clip ``i`` has label ``i % num_classes``). They are
rendered by :func:`jepactl.data.synthetic.render_clip`, the generator the ``synth`` pretraining
source uses, so the online probe asks about the same kind of clips the encoder trains on.

* ``shapes``: one object of the pretraining distribution (random texture, colours, size, place,
  translation, rotation and scaling over a noisy gradient backdrop), labelled by its shape
  (5 classes). What ``synth-shapes`` measures, at the recipe's size.
* ``directions``: a white disc (radius 0.12 of the frame) on black, moving in one of 8
  directions (E, SE, S, SW, W, NW, N, NE; y points down) at 0.02-0.04 frame widths per frame,
  half-way through the clip at a random place in the middle 40 % of the frame; 8 classes. On
  ``mean``-pooled features the place is averaged away, so a probe must read the motion from
  what each token encodes: raw pixels pooled the same way score far lower
  (``docs/results.md``). Measured, not assumed: on the pretraining distribution (random
  shapes, textures, colours and backdrops) the same labels were at chance for every encoder
  and for pixels at this scale, so the scene is kept clean.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from jepactl.data.synthetic import (
    SHAPES,
    BackgroundSpec,
    ObjectSpec,
    SyntheticVideoSource,
    render_clip,
)

Scene = tuple[list[ObjectSpec], BackgroundSpec, int]


def _directions_scene(index: int, frames: int, seed: int) -> Scene:
    rng = np.random.default_rng([seed, 8, index])
    label = index % 8
    angle = label * math.pi / 4
    speed = float(rng.uniform(0.02, 0.04))
    velocity = (speed * math.cos(angle), speed * math.sin(angle))
    mid = rng.uniform(0.3, 0.7, size=2)  # where the disc is half-way through the clip
    start = mid - np.asarray(velocity) * (frames - 1) / 2
    disc = ObjectSpec("disc", (float(start[0]), float(start[1])), 0.12, velocity)
    return [disc], BackgroundSpec(color=(0.0, 0.0, 0.0), color2=(0.0, 0.0, 0.0)), label


def _shapes_set(n: int, frames: int, size: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Single-object scenes of the pretraining source, taken in order, each kept only while its
    shape still needs clips, so that clip ``i`` has label ``i % 5``."""
    source = SyntheticVideoSource(frames, size, seed=seed, min_objects=1, max_objects=1)
    labels = [i % len(SHAPES) for i in range(n)]
    slots: dict[int, list[int]] = {c: [] for c in range(len(SHAPES))}
    for i, c in enumerate(labels):
        slots[c].append(i)
    clips: list[torch.Tensor] = [torch.empty(0)] * n
    index = 0
    while any(slots.values()):
        objects, _ = source.scene(index)
        wanted = slots[SHAPES.index(objects[0].shape)]
        if wanted:
            clips[wanted.pop(0)] = source[index].clip
        index += 1
    return torch.stack(clips), np.asarray(labels, dtype=np.int64)


def _scene_set(
    scene: Callable[[int, int, int], Scene], n: int, frames: int, size: int, seed: int
) -> tuple[torch.Tensor, np.ndarray]:
    clips, labels = [], []
    for i in range(n):
        objects, background, label = scene(i, frames, seed)
        clips.append(render_clip(objects, background, frames, size))
        labels.append(label)
    return torch.stack(clips), np.asarray(labels, dtype=np.int64)


#: name -> (number of classes, maker of ``n`` clips at ``frames`` x ``size``² from ``seed``).
TASKS: dict[str, tuple[int, Callable[[int, int, int, int], tuple[torch.Tensor, np.ndarray]]]] = {
    "shapes": (len(SHAPES), _shapes_set),
    "directions": (8, lambda n, f, s, seed: _scene_set(_directions_scene, n, f, s, seed)),
}


def labelled_set(
    task: str, n: int, frames: int, size: int, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` uint8 clips ``[n, frames, size, size, 3]`` of ``task`` and their labels."""
    if task not in TASKS:
        raise ValueError(f"unknown monitor task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task][1](n, frames, size, seed)

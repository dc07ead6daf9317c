"""The synth-motion clip renderers: the two tasks' classes, clip size and pixels.

The class names of the two tasks (:data:`DIRECTIONS` with their :data:`DIRECTION_VELOCITIES`,
:data:`MIXED_CLASSES`), the clip's frames and side (:data:`FRAMES`, :data:`SIZE`), and the
deterministic renderers: the reference's ``directions`` clip (:func:`direction_scene`,
:func:`render_direction_clip`) and the ``mixed`` task's object and backdrop
(:func:`mixed_scene`, :func:`render_mixed_clip`). Cut from
:mod:`jepactl.features.synth_motion` here because these are pure functions of a seed and a
label, with no protocol, file or benchmark in them; that module (the protocols, the keyed
on-disk dataset, the benchmarks) re-exports every name, documents the tasks, and holds
:data:`~jepactl.features.synth_motion.GENERATOR_VERSION`, to bump whenever a renderer's output
here changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jepactl.data.synthetic import BackgroundSpec, ObjectSpec

DIRECTIONS: tuple[str, ...] = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
#: Velocity (dx, dy) in px/frame of each direction class; image y points down.
DIRECTION_VELOCITIES: tuple[tuple[int, int], ...] = (
    (0, -4), (3, -3), (4, 0), (3, 3), (0, 4), (-3, 3), (-4, 0), (-3, -3),
)  # fmt: skip
MIXED_CLASSES: tuple[str, ...] = (
    "right", "left", "up", "down", "clockwise", "anticlockwise", "grow", "shrink",
)  # fmt: skip

FRAMES = 8  # frames the encoder sees (the reference keeps the first 8)
SIZE = 160  # frame side in pixels, no resize
REFERENCE_RENDERED_FRAMES = 32  # the reference renders 32 frames and keeps 8


@dataclass(frozen=True)
class DirectionScene:
    """The random draws of one ``directions`` clip (see :func:`direction_scene`)."""

    background: np.ndarray  # uint8 [3]
    noise: np.ndarray  # uint8 [rendered frames, size, size, 1]
    color: np.ndarray  # uint8 [3]
    radius: int
    x0: int
    y0: int

    def centers(self, label: int, frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Disc centres ``(cx, cy)`` per frame: clipped to the walls, where the disc sticks."""
        dx, dy = DIRECTION_VELOCITIES[label]
        t = np.arange(frames)
        lo, hi = self.radius, size - self.radius - 1
        return np.clip(self.x0 + dx * t, lo, hi), np.clip(self.y0 + dy * t, lo, hi)


def direction_scene(rng_seed: int, frames: int = FRAMES, size: int = SIZE) -> DirectionScene:
    """Draw, in the reference's order from ``default_rng(rng_seed)``: background colour
    (uint8 in [0, 80)), grey noise in [0, 30) for ``max(32, frames)`` frames, disc colour
    (uint8 in [120, 256)), radius in [10, size // 4) (the lower bound shrinks to size // 16
    on frames under 160 px, for tests), then x0 and y0 in [r, size - r)."""
    rng = np.random.default_rng(rng_seed)
    background = rng.integers(0, 80, size=3, dtype=np.uint8)
    rendered = max(REFERENCE_RENDERED_FRAMES, frames)
    noise = rng.integers(0, 30, size=(rendered, size, size, 1)).astype(np.uint8)
    color = rng.integers(120, 256, size=3, dtype=np.uint8)
    radius = int(rng.integers(min(10, size // 16), size // 4))  # [10, 40) at 160 px
    x0 = int(rng.integers(radius, size - radius))
    y0 = int(rng.integers(radius, size - radius))
    return DirectionScene(background, noise, color, radius, x0, y0)


def render_direction_clip(
    rng_seed: int, label: int, frames: int = FRAMES, size: int = SIZE
) -> np.ndarray:
    """The reference's evaluation clip (``generate_eval_synth_videos.py``), first ``frames``.

    The draws are :func:`direction_scene`'s. Frame t is the background colour plus that
    frame's grey noise (uint8, at most 108), with the pixels ``(x - cx)^2 + (y - cy)^2 <= r^2``
    set to the flat disc colour (no noise on it); the centre moves by the label's velocity per
    frame and is clipped to ``[r, size - r - 1]``: a disc that reaches a wall sticks there.
    """
    if not 0 <= label < 8:
        raise ValueError(f"label must be in [0, 8), got {label}")
    scene = direction_scene(rng_seed, frames, size)
    clip = scene.noise[:frames] + scene.background  # [T, H, W, 3] uint8
    cx, cy = scene.centers(label, frames, size)
    grid = np.arange(size)
    inside = (grid[None, None, :] - cx[:, None, None]) ** 2 + (
        grid[None, :, None] - cy[:, None, None]
    ) ** 2 <= scene.radius**2  # [T, H, W]
    clip[inside] = scene.color
    return clip


def mixed_scene(
    rng_seed: int | Sequence[int], label: int, frames: int = FRAMES, size: int = SIZE
) -> tuple[ObjectSpec, BackgroundSpec]:
    """The object and backdrop of one ``mixed`` clip (see :func:`render_mixed_clip`)."""
    from jepactl.data.synthetic import SHAPES, TEXTURES, BackgroundSpec, ObjectSpec

    if not 0 <= label < 8:
        raise ValueError(f"label must be in [0, 8), got {label}")
    rng = np.random.default_rng(rng_seed)
    mid = (frames - 1) / 2.0
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    plain = shape in ("disc", "ring")  # rotation-symmetric: needs a texture to show turning
    textures = TEXTURES[1:] if plain else TEXTURES
    texture = textures[int(rng.integers(len(textures)))]
    color = _color(rng.uniform(0.0, 1.0, size=3))
    color2 = _color((np.asarray(color) + 0.5 + rng.uniform(-0.15, 0.15, 3)) % 1.0)
    mid_radius = float(rng.uniform(0.12, 0.20))
    mid_center = rng.uniform(0.3, 0.7, size=2)
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    speed = float(rng.uniform(2.0, 5.0)) / size  # image units per frame
    turn = float(rng.uniform(0.06, 0.14))
    growth = float(rng.uniform(0.04, 0.08))
    velocity = (0.0, 0.0)
    angular_velocity = 0.0
    scale_rate = 1.0
    name = MIXED_CLASSES[label]
    if name in ("right", "left", "up", "down"):
        unit = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
        velocity = (unit[name][0] * speed, unit[name][1] * speed)
    elif name in ("clockwise", "anticlockwise"):
        angular_velocity = turn if name == "clockwise" else -turn
    else:
        scale_rate = math.exp(growth if name == "grow" else -growth)
    obj = ObjectSpec(
        shape=shape,
        center=(
            float(mid_center[0] - mid * velocity[0]),
            float(mid_center[1] - mid * velocity[1]),
        ),
        radius=mid_radius / scale_rate**mid,
        velocity=velocity,
        scale_rate=scale_rate,
        angle=angle - mid * angular_velocity,
        angular_velocity=angular_velocity,
        texture=texture,
        color=color,
        color2=color2,
        texture_seed=int(rng.integers(2**32)),
    )
    background = BackgroundSpec(
        color=_color(rng.uniform(0.0, 1.0, size=3)),
        color2=_color(rng.uniform(0.0, 1.0, size=3)),
        gradient_angle=float(rng.uniform(0.0, 2.0 * math.pi)),
        noise_std=0.03,
        noise_seed=int(rng.integers(2**32)),
    )
    return obj, background


def _color(values: np.ndarray) -> tuple[float, float, float]:
    red, green, blue = (float(v) for v in values)
    return red, green, blue


def render_mixed_clip(
    rng_seed: int | Sequence[int], label: int, frames: int = FRAMES, size: int = SIZE
) -> np.ndarray:
    """One clip of the ``mixed`` task: uint8 ``[frames, size, size, 3]``.

    Class motions (per frame, ``frames - 1`` steps in all): translation at 2-5 px/frame
    (right, left, up, down), rotation at 0.06-0.14 rad/frame (clockwise on screen is a positive
    angle, as y points down; anticlockwise), scaling by ``exp(+-u)`` per frame with ``u`` in
    0.04-0.08 (grow, shrink). Nuisances drawn for every class alike: shape, texture (always
    textured for the rotation-symmetric disc and ring), colours, the circumradius at mid-clip
    (12-20 % of the frame side), the mid-clip centre (30-70 % of the frame on each axis), the
    mid-clip angle, a two-colour gradient backdrop and uniform camera noise (std 0.03). So the
    middle frame carries no class information; the first frame carries a little (a "right"
    object starts left of its uniformly placed mid-clip centre, a "grow" one starts small),
    which is motion seen from one end.
    """
    from jepactl.data.synthetic import render_clip

    obj, background = mixed_scene(rng_seed, label, frames, size)
    return render_clip([obj], background, frames, size).numpy()

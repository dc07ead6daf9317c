"""Procedural synthetic videos: textured shapes in affine motion over a noisy backdrop.

Pretraining has to run with no download on a two-core CPU, and a synthetic motion benchmark
needs clips whose motion is known exactly. Both go through :func:`render_clip`;
:class:`SyntheticVideoSource` only adds a deterministic random draw of scenes on top.

Conventions. Image units: the frame side is 1, x points right, y points down, and pixel
``(row i, column j)`` has its centre at ``((j + 0.5) / size, (i + 0.5) / size)``. Colours are
RGB floats in ``[0, 1]``. Angles are radians; a positive angle turns +x toward +y, which is
clockwise on screen because y points down.

Bit-identical output. A clip depends on its specs only: every random choice comes from
explicit seeds (numpy's PCG64, whose streams are platform-independent), and the per-pixel
maths sticks to correctly rounded operations (add, multiply, divide, sqrt, floor, min/max,
compare), never sin or exp, whose vectorised and scalar kernels may differ in the last bit.
So the bytes do not depend on how torch splits the work across threads, and a DataLoader
worker (one thread) renders what the main process does. Equality across machines further
assumes the same torch build and CPU instruction set (the per-frame cos/sin).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from jepactl.data.base import Sample

RENDER_VERSION = 1
"""Bump whenever :func:`render_clip` (or a shape or texture) draws different pixels: cached
clips made from it (``jepactl synth-motion``) are keyed by it and rebuilt."""

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "ring", "cross")
"""Shape names; a shape's position in this tuple is its class label."""

TEXTURES: tuple[str, ...] = ("flat", "stripes", "checker", "noise")
"""Texture names. All but ``flat`` mix ``color`` and ``color2`` in object-local coordinates."""

Color = tuple[float, float, float]

# Shape geometry in object-local units, where every shape fits the unit disc (the "radius"
# of an object is its circumradius, so all shapes of one radius have the same extent).
_HALF_SIDE = 1.0 / math.sqrt(2.0)  # square inscribed in the unit circle
_SQRT3_2 = math.sqrt(3.0) / 2.0  # equilateral triangle: inradius 1/2, apex up
_RING_MID, _RING_HALF_WIDTH = 0.75, 0.25  # ring from radius 0.5 to 1
_ARM_HALF_WIDTH = 0.3
_ARM_HALF_LENGTH = math.sqrt(1.0 - _ARM_HALF_WIDTH**2)  # arm corners touch the unit circle
_NOISE_CELLS = 6  # value-noise lattice cells across the object's diameter


def _check_color(name: str, color: Sequence[float]) -> None:
    if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
        raise ValueError(f"{name} must be 3 floats in [0, 1], got {color!r}")


def _check_finite(name: str, *values: float) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {values!r}")


@dataclass(frozen=True)
class ObjectSpec:
    """One object's appearance and its affine trajectory, in image units.

    At frame ``f`` the object has centre ``center + f * velocity``, radius
    ``radius * scale_rate ** f`` and angle ``angle + f * angular_velocity``. ``radius`` is the
    circumradius: every shape fits the disc of that radius. The texture is evaluated in the
    object's own coordinates, so it translates, rotates and scales with the object and motion
    shows inside the object, not only along its outline. ``texture_seed`` fixes the texture's
    random parameters (stripe frequency and orientation, checker size, noise pattern).
    """

    shape: str
    center: tuple[float, float]
    radius: float
    velocity: tuple[float, float] = (0.0, 0.0)
    scale_rate: float = 1.0
    angle: float = 0.0
    angular_velocity: float = 0.0
    texture: str = "flat"
    color: Color = (1.0, 1.0, 1.0)
    color2: Color = (0.0, 0.0, 0.0)
    texture_seed: int = 0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.texture not in TEXTURES:
            raise ValueError(f"texture must be one of {TEXTURES}, got {self.texture!r}")
        if len(self.center) != 2 or len(self.velocity) != 2:
            raise ValueError("center and velocity must be (x, y) pairs")
        _check_finite("center, velocity, angle and angular_velocity", *self.center,
                      *self.velocity, self.angle, self.angular_velocity)  # fmt: skip
        if not (self.radius > 0 and math.isfinite(self.radius)):
            raise ValueError(f"radius must be positive and finite, got {self.radius!r}")
        if not (self.scale_rate > 0 and math.isfinite(self.scale_rate)):
            raise ValueError(f"scale_rate must be positive and finite, got {self.scale_rate!r}")
        _check_color("color", self.color)
        _check_color("color2", self.color2)
        if self.texture_seed < 0:
            raise ValueError(f"texture_seed must be >= 0, got {self.texture_seed}")


@dataclass(frozen=True)
class BackgroundSpec:
    """The backdrop, plus the camera noise laid over the whole frame.

    The backdrop is a linear gradient from ``color`` to ``color2`` along the direction
    ``gradient_angle``, spanning the frame corner to corner (equal colours give a flat
    backdrop). After the objects are composited, zero-mean noise with standard deviation
    ``noise_std`` (intensity units, 1 = full scale) is added to every pixel, channel and frame
    independently, drawn from ``noise_seed``. It covers the objects too, like sensor noise, so
    a model cannot segment objects by where the noise is missing; it is fresh every frame, so
    it is the part of the clip no predictor can forecast. The noise is uniform rather than
    Gaussian because drawing Gaussian noise costs several times the rest of the render.
    """

    color: Color = (0.5, 0.5, 0.5)
    color2: Color = (0.5, 0.5, 0.5)
    gradient_angle: float = 0.0
    noise_std: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        _check_color("color", self.color)
        _check_color("color2", self.color2)
        _check_finite("gradient_angle", self.gradient_angle)
        if not (self.noise_std >= 0 and math.isfinite(self.noise_std)):
            raise ValueError(f"noise_std must be >= 0 and finite, got {self.noise_std!r}")
        if self.noise_seed < 0:
            raise ValueError(f"noise_seed must be >= 0, got {self.noise_seed}")


def render_clip(
    objects: Sequence[ObjectSpec],
    background: BackgroundSpec,
    num_frames: int,
    size: int,
    frame_step: int = 1,
) -> torch.Tensor:
    """Render a ``num_frames`` x ``size`` x ``size`` RGB clip, uint8 ``[T, size, size, 3]``.

    ``objects`` are composited back to front (the first is furthest back). All frames are
    rendered at once on ``[T, H, W]`` tensors; each object only touches the box its disc sweeps
    over the clip, which keeps small objects cheap on big frames. ``frame_step`` renders the
    native frames ``0, s, 2s, ...`` (a clip read at frame stride ``s``).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    # Pixel-centre coordinates in pixels along one axis. Grids stay separable ([1, 1, W] and
    # [1, H, 1]) until the rotation mixes them, so the full [T, H, W] grid is never stored.
    pixels = torch.arange(size, dtype=torch.float32) + 0.5
    frames = torch.arange(num_frames, dtype=torch.float64) * frame_step
    clip = _backdrop(background, pixels, size).expand(num_frames, size, size, 3).contiguous()
    for obj in objects:
        _paint(clip, obj, frames, pixels, size)
    if background.noise_std > 0:
        # Uniform on [-a, a] has standard deviation a / sqrt(3).
        amplitude = 255.0 * math.sqrt(3.0) * background.noise_std
        noise = np.random.default_rng(background.noise_seed).random(clip.shape, dtype=np.float32)
        clip += torch.from_numpy(noise).sub_(0.5).mul_(2.0 * amplitude)
    return clip.round_().clamp_(0.0, 255.0).to(torch.uint8)


def _backdrop(background: BackgroundSpec, pixels: torch.Tensor, size: int) -> torch.Tensor:
    """The gradient backdrop of one frame, float ``[H, W, 3]`` in 0..255."""
    cos, sin = math.cos(background.gradient_angle), math.sin(background.gradient_angle)
    centred = pixels / size - 0.5
    # Projection on the gradient direction, scaled so the extreme corners map to 0 and 1.
    span = abs(cos) + abs(sin)
    t = (centred[None, :] * (cos / span) + centred[:, None] * (sin / span)).add_(0.5)
    color = torch.tensor(background.color, dtype=torch.float32) * 255.0
    color2 = torch.tensor(background.color2, dtype=torch.float32) * 255.0
    return t.unsqueeze(-1) * (color2 - color) + color


def _paint(
    clip: torch.Tensor, obj: ObjectSpec, frames: torch.Tensor, pixels: torch.Tensor, size: int
) -> None:
    """Alpha-composite ``obj`` over ``clip`` (float ``[T, H, W, 3]``, 0..255) in place."""
    # Per-frame pose in float64 on [T] tensors, which are too small for torch to split, so
    # cos and sin here are computed the same way in every process.
    cx = (obj.center[0] + frames * obj.velocity[0]) * size
    cy = (obj.center[1] + frames * obj.velocity[1]) * size
    radius = obj.radius * size * obj.scale_rate**frames  # pixels
    angle = obj.angle + frames * obj.angular_velocity
    # Union over frames of the box around the object's disc, plus the anti-aliasing fringe.
    x0 = max(math.floor((cx - radius).min().item()) - 1, 0)
    x1 = min(math.ceil((cx + radius).max().item()) + 1, size)
    y0 = max(math.floor((cy - radius).min().item()) - 1, 0)
    y1 = min(math.ceil((cy + radius).max().item()) + 1, size)
    if x0 >= x1 or y0 >= y1:
        return

    def per_frame(values: torch.Tensor) -> torch.Tensor:
        return values.to(torch.float32).view(-1, 1, 1)

    # Local coordinates: rotate by -angle about the centre, divide by the radius. The
    # rotation's factors are applied to the separable offsets, so only the two sums are
    # full [T, H', W'] operations.
    cos_r, sin_r = per_frame(torch.cos(angle) / radius), per_frame(torch.sin(angle) / radius)
    dx = pixels[x0:x1].view(1, 1, -1) - per_frame(cx)
    dy = pixels[y0:y1].view(1, -1, 1) - per_frame(cy)
    lx = dx * cos_r + dy * sin_r
    ly = dy * cos_r - dx * sin_r

    # Coverage from the signed distance in pixels: a one-pixel linear ramp across the edge.
    alpha = _signed_distance(obj.shape, lx, ly).mul_(-per_frame(radius)).add_(0.5).clamp_(0, 1)
    alpha = alpha.unsqueeze(-1)
    region = clip[:, y0:y1, x0:x1]
    color = torch.tensor(obj.color, dtype=torch.float32) * 255.0
    color2 = torch.tensor(obj.color2, dtype=torch.float32) * 255.0
    mix = _texture(obj, lx, ly)
    if mix is None:
        fill = color - region
    elif mix.dtype == torch.bool:
        fill = torch.where(mix.unsqueeze(-1), color2, color).sub_(region)
    else:
        fill = mix.unsqueeze(-1).mul(color2 - color).add_(color).sub_(region)
    region += fill.mul_(alpha)


def _signed_distance(shape: str, lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor:
    """Signed distance to the shape's outline in local units (negative inside).

    Exact along edges, which is all the one-pixel anti-aliasing ramp needs.
    """
    if shape in ("disc", "ring"):
        r = (lx * lx).add_(ly * ly).sqrt_()
        return r.sub_(1.0) if shape == "disc" else r.sub_(_RING_MID).abs_().sub_(_RING_HALF_WIDTH)
    ax, ay = lx.abs(), ly.abs()
    if shape == "square":
        return torch.maximum(ax, ay).sub_(_HALF_SIDE)
    if shape == "triangle":
        # Three half-planes with outward normals (0, 1) and (+-sqrt(3)/2, -1/2); apex up.
        return torch.maximum(ly, ax.mul_(_SQRT3_2).sub_(ly * 0.5)).sub_(0.5)
    horizontal = torch.maximum(ax - _ARM_HALF_LENGTH, ay - _ARM_HALF_WIDTH)
    vertical = torch.maximum(ax.sub_(_ARM_HALF_WIDTH), ay.sub_(_ARM_HALF_LENGTH))
    return torch.minimum(horizontal, vertical)


def _texture(obj: ObjectSpec, lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor | None:
    """How much of ``color2`` each pixel shows: None (flat), bool (two-tone) or float in [0, 1]."""
    if obj.texture == "flat":
        return None
    rng = np.random.default_rng(obj.texture_seed)
    if obj.texture == "stripes":
        theta, cycles, phase = rng.uniform(0.0, math.pi), rng.uniform(1.5, 3.0), rng.uniform()
        u = (lx * (cycles * math.cos(theta))).add_(ly * (cycles * math.sin(theta))).add_(phase)
        return u.sub_(u.floor()).lt(0.5)
    if obj.texture == "checker":
        cells, ox, oy = rng.uniform(1.2, 2.5), rng.uniform(), rng.uniform()
        parity = (lx * cells).add_(ox).floor_().add_((ly * cells).add_(oy).floor_())
        return parity.remainder_(2.0).bool()
    # Value noise: bilinear interpolation of a random binary lattice spanning the unit disc,
    # which gives smooth blobs in both colours.
    n = _NOISE_CELLS
    lattice = torch.from_numpy(rng.integers(0, 2, size=(n + 1) * (n + 1)).astype(np.float32))
    gx = lx.clamp(-1.0, 1.0).add_(1.0).mul_(n / 2)
    gy = ly.clamp(-1.0, 1.0).add_(1.0).mul_(n / 2)
    ix, iy = gx.floor().clamp_(max=n - 1), gy.floor().clamp_(max=n - 1)
    fx, fy = gx.sub_(ix), gy.sub_(iy)
    corner = iy.mul_(n + 1).add_(ix).long()
    top_left, top_right = lattice[corner], lattice[corner + 1]
    bottom_left, bottom_right = lattice[corner + (n + 1)], lattice[corner + (n + 2)]
    top = top_right.sub_(top_left).mul_(fx).add_(top_left)
    bottom = bottom_right.sub_(bottom_left).mul_(fx).add_(bottom_left)
    return bottom.sub_(top).mul_(fy).add_(top)


class SyntheticVideoSource:
    """``length`` random synthetic clips (a million by default): the no-download default.

    Clip ``index`` is drawn from ``numpy.random.default_rng([seed, index])`` only, never from
    global random state, so the same ``(seed, index)`` gives the same bytes in any process or
    DataLoader worker, in any order. Each clip has ``min_objects`` to ``max_objects`` objects
    with random shape, texture and colours, translating, rotating and scaling at random rates,
    over a random gradient backdrop with ``noise_std`` camera noise.

    Trajectories are laid out over the whole clip so objects stay in view whatever
    ``num_frames`` is: start and end centres both lie in ``[0.15, 0.85]``, radii (circumradius,
    see :class:`ObjectSpec`) stay in ``[0.04, 0.15]`` (diameters of 8-30% of the frame) and
    change by at most ``e**0.3`` over the clip. Rotation is per frame (up to 0.12 rad, about
    7 degrees), since turning never leaves the frame.

    ``label`` is the index in :data:`SHAPES` of the object with the largest mean radius over
    the clip (occlusion is ignored), so a frozen probe can be scored on shape recognition.
    """

    def __init__(
        self,
        num_frames: int,
        size: int,
        seed: int = 0,
        length: int = 1_000_000,
        min_objects: int = 1,
        max_objects: int = 3,
        noise_std: float = 0.02,
        frame_stride: int = 1,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels for shapes to be recognisable, got {size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy seeds are non-negative), got {seed}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if min_objects < 1:
            raise ValueError(
                f"min_objects must be >= 1 (the label needs an object), got {min_objects}"
            )
        if max_objects < min_objects:
            raise ValueError(f"max_objects ({max_objects}) must be >= min_objects ({min_objects})")
        if not (noise_std >= 0 and math.isfinite(noise_std)):
            raise ValueError(f"noise_std must be >= 0 and finite, got {noise_std!r}")
        self.num_frames = num_frames
        self.size = size
        self.seed = seed
        self.length = length
        self.min_objects = min_objects
        self.max_objects = max_objects
        self.noise_std = noise_std
        self.frame_stride = frame_stride

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        index = operator.index(index)
        objects, background = self.scene(index)
        clip = render_clip(objects, background, self.num_frames, self.size, self.frame_stride)
        return Sample(clip=clip, label=self._label(objects), id=f"synth-{self.seed}-{index}")

    def scene(self, index: int) -> tuple[tuple[ObjectSpec, ...], BackgroundSpec]:
        """The specs clip ``index`` is rendered from, for inspection and debugging."""
        index = operator.index(index)
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range [0, {self.length})")
        rng = np.random.default_rng([self.seed, index])
        count = int(rng.integers(self.min_objects, self.max_objects + 1))
        objects = tuple(self._random_object(rng) for _ in range(count))
        background = BackgroundSpec(
            color=_random_color(rng),
            color2=_random_color(rng),
            gradient_angle=float(rng.uniform(0.0, 2.0 * math.pi)),
            noise_std=self.noise_std,
            noise_seed=int(rng.integers(2**32)),
        )
        return objects, background

    def _random_object(self, rng: np.random.Generator) -> ObjectSpec:
        # Native frames over which the trajectory is laid out; the clip shows every
        # ``frame_stride``-th of them, like a video read at that stride.
        span = max((self.num_frames - 1) * self.frame_stride, 1)
        start = rng.uniform(0.15, 0.85, size=2)
        # The end centre lies between the start and a random point of the same box, so it
        # stays in the box; the fraction makes slow and near-static objects as likely as fast.
        end = start + rng.uniform() * (rng.uniform(0.15, 0.85, size=2) - start)
        velocity = (end - start) / span
        radius = float(rng.uniform(0.04, 0.15))
        end_radius = float(np.clip(radius * math.exp(rng.uniform(-0.3, 0.3)), 0.04, 0.15))
        color = _random_color(rng)
        # The second colour is half a turn away in every channel (+- 0.15), so two-tone
        # textures always have contrast and their motion is visible.
        red, green, blue = (np.asarray(color) + 0.5 + rng.uniform(-0.15, 0.15, size=3)) % 1.0
        return ObjectSpec(
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            center=(float(start[0]), float(start[1])),
            radius=radius,
            velocity=(float(velocity[0]), float(velocity[1])),
            scale_rate=(end_radius / radius) ** (1.0 / span),
            angle=float(rng.uniform(0.0, 2.0 * math.pi)),
            angular_velocity=float(rng.uniform(-0.12, 0.12)),
            texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
            color=color,
            color2=(float(red), float(green), float(blue)),
            texture_seed=int(rng.integers(2**32)),
        )

    def _label(self, objects: Sequence[ObjectSpec]) -> int:
        growth = np.arange(self.num_frames, dtype=np.float64) * self.frame_stride
        mean_radius = [o.radius * float(np.mean(o.scale_rate**growth)) for o in objects]
        return SHAPES.index(objects[int(np.argmax(mean_radius))].shape)


def _random_color(rng: np.random.Generator) -> Color:
    red, green, blue = (float(c) for c in rng.uniform(0.0, 1.0, size=3))
    return red, green, blue

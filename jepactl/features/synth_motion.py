"""``jepactl synth-motion``: frozen encoders on 8-class synthetic motion discrimination (Table 6).

Two tasks, both 8 classes of 8-frame 160x160 clips:

``directions``
    The task the paper's Table 6 numbers come from (``../shared/spec/reference-evaluation.md``
    §B): one flat-coloured disc on a dark background with fresh grey noise every frame,
    translating in one of 8 directions N, NE, E, SE, S, SW, W, NW at 4 px/frame (3 px per axis
    on the diagonals); a disc that reaches a wall sticks there. Clip ``i`` has label ``i % 8``
    and is drawn from ``numpy.random.default_rng(base + i)`` exactly as the reference draws it
    (background colour, 32 frames of noise, disc colour, radius, position), so data seed 0 with
    200 clips is the reference's evaluation set. Data seed ``s`` uses ``base = 42 + s * n``
    for ``n`` clips, so draws of different seeds share no clip.
``mixed``
    The task the paper's caption describes: 8 classes over translation (right, left, up,
    down), rotation (clockwise, anticlockwise) and scaling (grow, shrink). Every clip has one
    object of random shape, texture, colours and mid-clip size, at a random place, over a
    random gradient backdrop with camera noise; the speed of its motion is random too. Sizes
    are drawn at mid-clip for every class, and rotation-symmetric shapes (disc, ring) always
    carry a texture, so neither size, colour nor shape gives the class away, and the middle
    frame carries no class information: only the motion does.

Clips are rendered deterministically and written once as real H.264 files with PyAV (crf 23,
yuv420p, 8 fps, as the reference) into a cache folder keyed by the generator version and every
parameter (``$JEPACTL_CACHE`` or ``~/.cache/jepactl``, ``synth-motion/<task>-...-<key>/``),
with ``train.csv`` and ``val.csv`` beside the clips; the folder is built under a temporary name
and renamed into place, so it exists only complete. Scoring then goes through the same path as
the real benchmarks: :func:`~jepactl.evaluation.extract.extract_features` decodes the clips
(the first 8 frames, no resize: 160x160, ImageNet normalisation) and caches the frozen
encoder's tokens, and :func:`~jepactl.evaluation.train_probe.train_probe` trains the probe.

Protocols:

``reference``
    The reference split: 200 clips, the first 160 train and the last 40 test (5 per class, so
    one clip is 2.5 points), the reference's probe (a cls token and one self-attention layer,
    ``attentive-reference``), AdamW lr 3e-4, wd 0.01, batch 32, 100 epochs, constant LR.
``default``
    960 train / 480 test clips (one test clip is 0.21 points). The tokens are average-pooled
    to a 2x2 grid per time step (``--pool space2x2``), concatenated and standardised, and an L2
    logistic regression (scikit-learn, lbfgs, C = 1) is fitted: a convex, deterministic probe
    that needs no learning-rate tuning and sees where and when each pooled token is. Why not
    an attentive probe: attention pooling is invariant to the order of the tokens, and a RoPE
    encoder writes no absolute position into its tokens, so the probe must read direction from
    token content alone; on our CPU-sized encoders the attentive probe stayed at chance on this
    task in 20 epochs (train accuracy ~16 %), while this probe reached ~58 % on the same cache
    (docs/evaluation.md has the measurement).

``--seeds N`` repeats the data draw and the probe over seeds ``0 .. N-1`` (data seed = probe
seed); the result is the mean with the sample standard deviation and a 95% Student-t interval
of the mean. The per-run result is written to ``RUN/probes/synth-motion-<task>.json``
(``synth-motion-<task>-reference.json`` under the reference protocol), which ``jepactl compare``
reads as one column each.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from jepactl.data.synthetic import RENDER_VERSION, BackgroundSpec, ObjectSpec
from jepactl.errors import ConfigError
from jepactl.evaluation.benchmarks import Benchmark, ProbeKind
from jepactl.utils import available_cpus, current_umask, suggestion

__all__ = [
    "DIRECTIONS",
    "DIRECTION_VELOCITIES",
    "GENERATOR_VERSION",
    "MIXED_CLASSES",
    "PROTOCOLS",
    "TASKS",
    "MotionDataSpec",
    "Protocol",
    "check_task",
    "data_spec",
    "default_cache_dir",
    "direction_scene",
    "ensure_dataset",
    "format_cell",
    "format_table",
    "get_protocol",
    "mixed_scene",
    "motion_benchmark",
    "render_direction_clip",
    "render_mixed_clip",
    "result_name",
    "run_label",
    "score_run",
    "summarize",
]

GENERATOR_VERSION = 1
"""Bumped whenever a renderer's output changes, so cached datasets are rebuilt."""

DIRECTIONS: tuple[str, ...] = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
#: Velocity (dx, dy) in px/frame of each direction class; image y points down.
DIRECTION_VELOCITIES: tuple[tuple[int, int], ...] = (
    (0, -4), (3, -3), (4, 0), (3, 3), (0, 4), (-3, 3), (-4, 0), (-3, -3),
)  # fmt: skip
MIXED_CLASSES: tuple[str, ...] = (
    "right", "left", "up", "down", "clockwise", "anticlockwise", "grow", "shrink",
)  # fmt: skip
TASKS: dict[str, tuple[str, ...]] = {"directions": DIRECTIONS, "mixed": MIXED_CLASSES}

FRAMES = 8  # frames the encoder sees (the reference keeps the first 8)
SIZE = 160  # frame side in pixels, no resize
FPS = 8
REFERENCE_SEED = 42  # generate_eval_synth_videos.py's default --seed
REFERENCE_RENDERED_FRAMES = 32  # the reference renders 32 frames and keeps 8
MIXED_STREAM = 0x5EED  # first word of the mixed task's numpy seed sequence
CODEC_OPTIONS = {"crf": "23"}


# --------------------------------------------------------------------------------------
# Protocols and dataset specs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """How many clips a seed draws and how its probe is trained."""

    name: str
    n_train: int
    n_val: int
    pool: str
    probe: ProbeKind
    sklearn_features: str | None  # a scikit-learn probe on these features, else a torch head
    epochs: int
    lr: float
    wd: float
    batch_size: int
    schedule: Literal["cosine", "constant"]
    doc: str
    frames: int = FRAMES
    size: int = SIZE

    def describe(self) -> str:
        head = f"{self.name} protocol: {self.n_train} train / {self.n_val} test clips, "
        if self.sklearn_features is not None:
            return head + f"logistic regression on {self.pool}-pooled tokens"
        return head + f"{self.probe} probe, {self.epochs} epochs, lr {self.lr:g}"


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="reference",
            n_train=160,
            n_val=40,
            pool="none",
            probe="attentive-reference",
            sklearn_features=None,
            epochs=100,
            lr=3e-4,
            wd=0.01,
            batch_size=32,
            schedule="constant",
            doc=(
                "The reference's split and probe (eval_kinematic_args.py): 200 clips, the "
                "first 160 train and the last 40 test (one test clip = 2.5 points), a cls token "
                "with one self-attention layer, AdamW lr 3e-4, wd 0.01, batch 32, 100 epochs, "
                "constant LR."
            ),
        ),
        Protocol(
            name="default",
            n_train=960,
            n_val=480,
            pool="space2x2",
            probe="linear",
            sklearn_features="flat",
            epochs=1,
            lr=0.0,
            wd=0.0,
            batch_size=32,
            schedule="constant",
            doc=(
                "960 train / 480 test clips (one test clip = 0.21 points); tokens average-"
                "pooled to a 2x2 grid per time step (T'x2x2 tokens, which keeps where and when "
                "things are), concatenated, standardised, and fed to L2 logistic regression "
                "(scikit-learn lbfgs, C = 1): a deterministic, convex probe that needs no "
                "learning-rate tuning."
            ),
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol '{name}'{suggestion(name, PROTOCOLS)}")
    return PROTOCOLS[name]


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ConfigError(f"unknown synth-motion task '{task}'{suggestion(task, TASKS)}")
    return task


@dataclass(frozen=True)
class MotionDataSpec:
    """One deterministic draw of a task: clips ``[0, n_train)`` train, the rest test."""

    task: str
    n_train: int
    n_val: int
    seed: int = 0
    frames: int = FRAMES
    size: int = SIZE

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.n_train < 8 or self.n_val < 8 or self.n_train % 8 or self.n_val % 8:
            raise ConfigError(
                f"synth-motion needs multiples of 8 clips per split (labels are i % 8, so "
                f"splits stay class-balanced), got {self.n_train} / {self.n_val}"
            )
        if self.seed < 0:
            raise ConfigError(f"seeds must be >= 0, got {self.seed}")
        if self.frames < 2 or self.size < 32 or self.size % 2:
            raise ConfigError("synth-motion clips need >= 2 frames and an even size >= 32")

    @property
    def n_clips(self) -> int:
        return self.n_train + self.n_val

    @property
    def classes(self) -> tuple[str, ...]:
        return TASKS[self.task]

    def key(self) -> str:
        """12 hex digits of sha256 over everything the clips depend on: the parameters, the
        generator versions (this module's and :data:`jepactl.data.synthetic.RENDER_VERSION`),
        the seeding constants, the codec settings and the PyAV version (its bundled x264)."""
        import av

        blob = json.dumps(
            {
                **asdict(self),
                "generator_version": GENERATOR_VERSION,
                "render_version": RENDER_VERSION,
                "reference_seed": REFERENCE_SEED,
                "mixed_stream": MIXED_STREAM,
                "fps": FPS,
                "codec": CODEC_OPTIONS,
                "av": av.__version__,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def folder_name(self) -> str:
        return f"{self.task}-{self.n_train}+{self.n_val}-seed{self.seed}-{self.key()}"

    def render(self, index: int) -> tuple[np.ndarray, int]:
        """Clip ``index``: uint8 ``[frames, size, size, 3]`` and its label ``index % 8``."""
        if not 0 <= index < self.n_clips:
            raise IndexError(f"clip {index} out of range [0, {self.n_clips})")
        label = index % 8
        if self.task == "directions":
            base = REFERENCE_SEED + self.seed * self.n_clips
            clip = render_direction_clip(base + index, label, self.frames, self.size)
        else:
            clip = render_mixed_clip(
                (MIXED_STREAM, self.seed, index), label, self.frames, self.size
            )
        return clip, label


def data_spec(task: str, protocol: str | Protocol, seed: int = 0) -> MotionDataSpec:
    p = get_protocol(protocol) if isinstance(protocol, str) else protocol
    return MotionDataSpec(
        task=check_task(task), n_train=p.n_train, n_val=p.n_val, seed=seed, frames=p.frames,
        size=p.size,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# The on-disk dataset
# --------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$JEPACTL_CACHE``, else ``$XDG_CACHE_HOME/jepactl``, else ``~/.cache/jepactl``."""
    env = os.environ.get("JEPACTL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "jepactl"


class _ClipWriter(Dataset[tuple[int, int]]):
    """Renders and encodes clip ``i`` into ``folder`` (in DataLoader workers)."""

    def __init__(self, spec: MotionDataSpec, folder: Path) -> None:
        self.spec = spec
        self.folder = folder

    def __len__(self) -> int:
        return self.spec.n_clips

    def __getitem__(self, index: int) -> tuple[int, int]:
        from jepactl.data.writer import write_video

        clip, label = self.spec.render(index)
        write_video(self.folder / clip_name(self.spec, index), clip, fps=FPS, options=CODEC_OPTIONS)
        return index, label


def clip_name(spec: MotionDataSpec, index: int) -> str:
    """``clips/<key>-<index>.mp4``: the key makes clip ids unique across draws."""
    return f"clips/{spec.key()}-{index:05d}.mp4"


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _manifest(spec: MotionDataSpec) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "spec": asdict(spec),
        "key": spec.key(),
        "classes": list(spec.classes),
        "fps": FPS,
        "codec": {"name": "libx264", "pix_fmt": "yuv420p", **CODEC_OPTIONS},
        "splits": {"train": [0, spec.n_train], "val": [spec.n_train, spec.n_clips]},
    }


def ensure_dataset(
    spec: MotionDataSpec,
    cache_dir: Path | None = None,
    num_workers: int = 2,
    progress: bool = True,
) -> Path:
    """The folder holding ``spec``'s clips, ``train.csv`` and ``val.csv``; generated if absent.

    The folder is built in a fresh ``<name>.tmp-XXXX`` beside it and renamed, so it exists
    only complete (``dataset.json`` is written last, before the rename); a failed or
    interrupted build removes its temporary folder. A folder whose ``dataset.json`` does not
    match ``spec`` is an error rather than silently reused.
    """
    root = (cache_dir or default_cache_dir()) / "synth-motion" / spec.folder_name()
    manifest = _manifest(spec)
    if root.is_dir():
        try:
            found = json.loads((root / "dataset.json").read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{root} is not a complete synth-motion dataset ({exc}); delete it to rebuild"
            ) from None
        if found != manifest:
            raise ConfigError(f"{root}/dataset.json does not match its key; delete the folder")
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.tmp-", dir=root.parent))
    try:
        _build(spec, manifest, tmp, num_workers, progress)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "dataset.json").is_file():  # not another process finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a rename; a partial build otherwise
    return root


def _build(
    spec: MotionDataSpec, manifest: dict[str, Any], tmp: Path, num_workers: int, progress: bool
) -> None:
    """Render and encode every clip into ``tmp``, then the split CSVs and ``dataset.json``."""
    (tmp / "clips").mkdir()
    workers = max(0, min(num_workers, available_cpus()))
    loader = DataLoader(
        _ClipWriter(spec, tmp),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
    )
    labels: dict[int, int] = {}
    bar = tqdm(
        loader,
        total=spec.n_clips,
        desc=f"synth-motion {spec.task}: writing clips",
        unit="clip",
        disable=not progress,
        leave=False,
    )
    for index, label in bar:
        labels[int(index)] = int(label)
    for split, (first, end) in manifest["splits"].items():
        rows = "".join(f"{clip_name(spec, i)} {labels[i]}\n" for i in range(first, end))
        (tmp / f"{split}.csv").write_text(rows)
    (tmp / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the cache is shareable


def motion_benchmark(spec: MotionDataSpec, protocol: Protocol) -> Benchmark:
    """The evaluation benchmark over ``spec``'s folder (read with the ``csv`` reader)."""
    return Benchmark(
        name=f"synth-motion-{spec.task}-{protocol.name}-seed{spec.seed}",
        reader="csv",
        splits={"train": "train", "val": "val"},
        num_classes=8,
        frames=spec.frames,
        sampling="first",
        crop=spec.size,
        views=1,
        probe=protocol.probe,
        epochs=protocol.epochs,
        lr=protocol.lr,
        wd=protocol.wd,
        batch_size=protocol.batch_size,
        doc=f"synth-motion {spec.task}, data seed {spec.seed}; {protocol.doc}",
    )


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (``ddof=1``) and the 95% Student-t interval of the mean.

    With one value the std and interval are ``None`` (a single seed has no spread to report).
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to summarise")
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, x.size - 1)) * std / math.sqrt(x.size)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": int(x.size)}


ProgressCallback = Callable[[str], None]


def score_run(
    run_dir: Path,
    task: str = "directions",
    protocol: str | Protocol = "default",
    seeds: int = 1,
    weights: str = "auto",
    device: str = "auto",
    cache_dir: Path | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    keep_features: bool = False,
    progress: bool = True,
    say: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Score ``run_dir``'s frozen encoder on ``task`` over ``seeds`` data draws and probes.

    Returns the result written to ``RUN/probes/<result_name(task, protocol)>.json``
    (``synth-motion-<task>.json`` for the default protocol): the probe result
    of the first seed (checkpoint, weights, protocol...) with ``top1``/``top5`` replaced by
    their means over seeds, plus ``top1_std``, ``top1_ci95``, ``n_seeds``, ``per_seed``,
    ``protocol_name`` and ``task``. Feature caches are deleted after probing unless
    ``keep_features`` (they are cheap to recompute from the cached clips); a kept cache built
    with other settings (e.g. an older protocol) is rebuilt, a matching one reused.
    """
    from jepactl.evaluation.extract import WEIGHTS, extract_features
    from jepactl.evaluation.train_probe import resolve_device, train_probe, write_result

    check_task(task)
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if weights not in WEIGHTS:  # checked before minutes of clip writing, not after
        raise ConfigError(f"unknown weights '{weights}'{suggestion(weights, WEIGHTS)}")
    try:
        resolve_device(device)
    except RuntimeError as exc:  # an unknown device, or CUDA asked for and not visible
        raise ConfigError(f"device '{device}': {exc}") from None
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints" / "latest.pt").is_file():
        raise ConfigError(
            f"{run_dir} has no checkpoint (checkpoints/latest.pt); train it first, e.g. "
            "`jepactl pretrain --recipe synth/baseline`"
        )
    name = result_name(task, proto)  # the result's file stem and its ``bench``
    per_seed: list[dict[str, Any]] = []
    kept: list[dict[str, str]] = []
    first: dict[str, Any] | None = None
    for seed in range(seeds):
        spec = data_spec(task, proto, seed)
        root = ensure_dataset(spec, cache_dir, num_workers=num_workers, progress=progress)
        bench = motion_benchmark(spec, proto)
        if say is not None:
            say(f"{run_dir}: {task}, seed {seed + 1}/{seeds}: encoding {spec.n_clips} clips")
        caches = extract_features(
            run_dir, bench, weights=weights, pool=proto.pool, batch_size=batch_size,
            num_workers=num_workers, force=True, roots={"csv": root}, progress=progress,
            device=device,
        )  # fmt: skip
        try:
            result = train_probe(
                caches["train"], caches["val"], probe=proto.probe, epochs=proto.epochs,
                lr=proto.lr, wd=proto.wd, batch_size=proto.batch_size, seed=seed,
                schedule=proto.schedule, device=device, progress=progress,
                sklearn=proto.sklearn_features is not None,
                sklearn_features=proto.sklearn_features or "mean",
            )  # fmt: skip
        finally:
            if keep_features:
                kept.append({split: str(path) for split, path in caches.items()})
            else:
                shutil.rmtree(caches["train"].parent, ignore_errors=True)
        first = first or result
        per_seed.append(
            {
                "seed": seed,
                "top1": result["top1"],
                "top5": result["top5"],
                "n_train": result["n_train"],
                "n_val": result["n_val"],
                "train_loss": result["train_loss"],
                "dataset": str(root),
                "wall_time_s": result["wall_time_s"],
            }
        )
    assert first is not None
    top1 = summarize([r["top1"] for r in per_seed])
    top5 = summarize([r["top5"] for r in per_seed])
    out = dict(first)
    out.update(
        {
            "bench": name,
            "task": task,
            "classes": list(TASKS[task]),
            "protocol_name": proto.name,
            "top1": round(top1["mean"], 4),
            "top5": round(top5["mean"], 4),
            "top1_std": None if top1["std"] is None else round(top1["std"], 4),
            "top1_ci95": None if top1["ci95"] is None else [round(v, 4) for v in top1["ci95"]],
            "n_seeds": seeds,
            "seed": 0,
            "seeds": list(range(seeds)),
            "per_seed": per_seed,
            "caches": kept or None,
            "generator_version": GENERATOR_VERSION,
            "wall_time_s": round(sum(r["wall_time_s"] for r in per_seed), 3),
        }
    )
    write_result(run_dir, name, out)
    return out


def result_name(task: str, protocol: str | Protocol) -> str:
    """``synth-motion-<task>`` for the default protocol, ``synth-motion-<task>-<protocol>``
    otherwise: the result file's name (``RUN/probes/<name>.json``) and so ``compare``'s column,
    so scoring with another protocol never overwrites, or mixes with, the default's result."""
    name = protocol if isinstance(protocol, str) else protocol.name
    return f"synth-motion-{task}" if name == "default" else f"synth-motion-{task}-{name}"


def run_label(run_dir: Path) -> str:
    """The run's display name (from ``config.yaml``), else its folder name."""
    import yaml

    try:
        config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
        name = str(config.get("display_name") or "")
    except (OSError, yaml.YAMLError, AttributeError):
        name = ""
    return name or Path(run_dir).name


def format_cell(result: dict[str, Any]) -> str:
    """``61.25`` for one seed; ``61.25 ± 3.10 (3) [53.55, 68.95]`` for several."""
    cell = f"{result['top1']:.2f}"
    if result.get("n_seeds", 1) > 1 and result.get("top1_std") is not None:
        lo, hi = result["top1_ci95"]
        cell += f" ± {result['top1_std']:.2f} ({result['n_seeds']}) [{lo:.2f}, {hi:.2f}]"
    return cell


def format_table(
    rows: Sequence[tuple[str, dict[str, Any]]],
    task: str,
    protocol: str | Protocol,
    markdown: bool = False,
) -> str:
    """Table 6's shape: ``Method | Accuracy (%)``, with a caption line and a footnote."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    n_seeds = max((r.get("n_seeds", 1) for _, r in rows), default=1)
    what = (
        "8 translation directions (N, NE, E, SE, S, SW, W, NW)"
        if task == "directions"
        else "8 classes over translation, rotation and scaling"
    )
    caption = (
        f"Synthetic motion, {task}: {what}; {proto.describe()}; "
        f"{n_seeds} seed{'s' if n_seeds > 1 else ''}; chance 12.5%."
    )
    header = ("Method", "Accuracy (%)")
    body = [(label, format_cell(r)) for label, r in rows]
    from jepactl.compare import WEIGHTS_NAMES

    names = {str(r.get("weights")) for _, r in rows}
    weights = sorted(WEIGHTS_NAMES.get(w, w) for w in names)
    foot = f"Weights: {', '.join(weights)}."
    if n_seeds > 1:
        foot += " Cells: mean ± std (seeds) [95% t-interval of the mean]."
    if markdown:
        lines = [caption, "", f"| {header[0]} | {header[1]} |", "|---|---:|"]
        lines += [f"| {a} | {b} |" for a, b in body]
        return "\n".join([*lines, "", foot])
    width = max(len(header[0]), *(len(a) for a, _ in body))
    lines = [caption, "", f"{header[0]:<{width}}  {header[1]}", "-" * (width + 2 + 12)]
    lines += [f"{a:<{width}}  {b}" for a, b in body]
    return "\n".join([*lines, "", foot])

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
the real benchmarks: :func:`~jepactl.features.extract.extract_features` decodes the clips
(the first 8 frames, no resize: 160x160, ImageNet normalisation) and caches the frozen
encoder's tokens, and :func:`~jepactl.probe.train.train_probe` trains the probe.

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

The class names, clip size and renderers live in :mod:`jepactl.features.synth_motion_render`
(pure functions of a seed and a label); this module, which re-exports them, holds the
protocols, the data draws and the keyed on-disk dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from jepactl.data.synthetic import RENDER_VERSION
from jepactl.errors import ConfigError
from jepactl.features.benchmarks import Benchmark, ProbeKind
from jepactl.features.synth_motion_render import (
    DIRECTION_VELOCITIES,
    DIRECTIONS,
    FRAMES,
    MIXED_CLASSES,
    REFERENCE_RENDERED_FRAMES,
    SIZE,
    DirectionScene,
    direction_scene,
    mixed_scene,
    render_direction_clip,
    render_mixed_clip,
)
from jepactl.log import progress_bars
from jepactl.utils import available_cpus, current_umask, suggestion

__all__ = [
    "DIRECTIONS",
    "DIRECTION_VELOCITIES",
    "GENERATOR_VERSION",
    "MIXED_CLASSES",
    "PROTOCOLS",
    "REFERENCE_RENDERED_FRAMES",
    "TASKS",
    "DirectionScene",
    "MotionDataSpec",
    "Protocol",
    "check_task",
    "data_spec",
    "default_cache_dir",
    "direction_scene",
    "ensure_dataset",
    "get_protocol",
    "mixed_scene",
    "motion_benchmark",
    "render_direction_clip",
    "render_mixed_clip",
]

GENERATOR_VERSION = 1
"""Bumped whenever a renderer's output changes, so cached datasets are rebuilt."""

TASKS: dict[str, tuple[str, ...]] = {"directions": DIRECTIONS, "mixed": MIXED_CLASSES}

FPS = 8
REFERENCE_SEED = 42  # generate_eval_synth_videos.py's default --seed
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
        disable=not (progress and progress_bars()),
        leave=False,
    )
    for index, label in bar:
        labels[int(index)] = int(label)
    for split, (first, end) in manifest["splits"].items():
        rows = "".join(f"{clip_name(spec, i)} {labels[i]}\n" for i in range(first, end))
        (tmp / f"{split}.csv").write_text(rows)
    (tmp / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the cache is shareable


def motion_benchmark(
    spec: MotionDataSpec, protocol: Protocol, name: str | None = None
) -> Benchmark:
    """The evaluation benchmark over ``spec``'s clips (generated on first use, then read with
    the ``csv`` reader) with ``protocol``'s pooling and probe. ``jepactl probe`` and
    ``jepactl synth-motion`` both score through it."""
    return Benchmark(
        name=name or f"synth-motion-{spec.task}-{protocol.name}-seed{spec.seed}",
        reader="synth-motion",
        splits={"train": "train", "val": "val"},
        num_classes=8,
        frames=spec.frames,
        sampling="first",
        crop=spec.size,
        views=1,
        pool=protocol.pool,
        probe=protocol.probe,
        sklearn_features=protocol.sklearn_features,
        epochs=protocol.epochs,
        lr=protocol.lr,
        wd=protocol.wd,
        batch_size=protocol.batch_size,
        schedule=protocol.schedule,
        options={
            "task": spec.task,
            "n_train": spec.n_train,
            "n_val": spec.n_val,
            "seed": spec.seed,
        },
        doc=f"synth-motion {spec.task}, data seed {spec.seed}; {protocol.doc}",
    )


def spec_of(bench: Benchmark) -> MotionDataSpec:
    """The data draw a ``synth-motion`` benchmark reads (from its options)."""
    known = {"task", "n_train", "n_val", "seed"}
    unknown = sorted(set(bench.options) - known)
    if unknown:
        raise ConfigError(
            f"benchmark {bench.name}: unknown synth-motion option '{unknown[0]}'"
            f"{suggestion(unknown[0], known)}"
        )
    opts = dict(bench.options)
    return MotionDataSpec(
        task=str(opts.get("task", "directions")), n_train=int(opts.get("n_train", 960)),
        n_val=int(opts.get("n_val", 480)), seed=int(opts.get("seed", 0)), frames=bench.frames,
        size=bench.crop,
    )  # fmt: skip


def registered_benchmarks() -> dict[str, Benchmark]:
    """``synth-motion-directions`` and ``synth-motion-mixed``: each task's default-protocol
    draw (data seed 0) as an ordinary benchmark, so ``extract-features`` and ``probe`` take
    them like any dataset. Their result files are the ones ``jepactl synth-motion`` writes."""
    default = PROTOCOLS["default"]
    return {
        f"synth-motion-{task}": motion_benchmark(
            data_spec(task, default, 0), default, name=f"synth-motion-{task}"
        )
        for task in TASKS
    }

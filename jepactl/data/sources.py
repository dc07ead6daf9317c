"""Sources: indexed datasets decoded into clips, the synthetic source, and weighted mixtures.

A source maps an index to a :class:`~jepactl.data.base.Sample`. ``load(index, seed)`` takes
the seed of everything random about that sample (clip start, crop, flip), which the loader
derives from (run seed, step, index): the same step always sees the same pixels, in any worker,
after any resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from jepactl.config import DataConfig
from jepactl.data.base import Sample
from jepactl.data.readers import IMAGE_EXTENSIONS as IMAGE_SUFFIXES
from jepactl.data.readers import RECIPE_HINT, DatasetIndex, read_datasets
from jepactl.errors import ConfigError


@dataclass(frozen=True)
class ClipSpec:
    """How a pretraining clip is cut from a video (or an image)."""

    num_frames: int
    frame_stride: int
    crop: int
    decode_short_side: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    flip: float
    images: str  # "frame" | "repeat"

    @classmethod
    def from_config(cls, cfg: DataConfig) -> ClipSpec:
        return cls(
            cfg.num_frames,
            cfg.frame_stride,
            cfg.crop,
            max(cfg.decode_short_side, cfg.crop),
            (cfg.scale[0], cfg.scale[1]),
            (cfg.ratio[0], cfg.ratio[1]),
            cfg.flip,
            cfg.images,
        )

    def frames_for(self, path: str) -> int:
        """Frames in the clip this spec cuts from ``path`` (an image may stay one frame)."""
        is_image = path.lower().endswith(IMAGE_SUFFIXES)
        return 1 if is_image and self.images == "frame" else self.num_frames


class IndexedSource:
    """Decodes the entries of a :class:`DatasetIndex` with the pretraining clip protocol:
    ``num_frames`` frames at ``frame_stride`` from a random start (PyAV, seeking to the clip),
    resized while decoding, then one random resized crop for all frames and a random flip."""

    def __init__(self, index: DatasetIndex, spec: ClipSpec) -> None:
        if not index.entries:
            raise ConfigError(f"{index.name} ({index.split}) at {index.root} has no usable entries")
        self.index = index
        self.spec = spec

    def __len__(self) -> int:
        return len(self.index.entries)

    def path(self, i: int) -> str:
        return self.index.entries[i].path

    def clip_frames(self, i: int) -> int:
        return self.spec.frames_for(self.path(i))

    def load(self, i: int, seed: int) -> Sample:
        from jepactl.data.augment import pretrain_transform
        from jepactl.data.decode import pretrain_indices, read_clip, read_image

        entry = self.index.entries[i]
        spec = self.spec
        rng = np.random.default_rng(seed)
        if entry.path.lower().endswith(IMAGE_SUFFIXES):
            clip = read_image(entry.path, short_side=spec.decode_short_side)
        else:  # one open: frame count, clip indices, then only the clip's frames
            clip, _ = read_clip(
                entry.path,
                lambda n: pretrain_indices(n, spec.num_frames, spec.frame_stride, rng),
                short_side=spec.decode_short_side,
                upscale=False,
            )
        clip = pretrain_transform(clip, spec.crop, rng, spec.scale, spec.ratio, spec.flip)
        if clip.shape[0] == 1 and spec.images == "repeat":
            clip = clip.expand(spec.num_frames, -1, -1, -1).contiguous()
        return Sample(clip=clip, label=entry.label, id=f"{self.index.name}/{entry.id}")


class SyntheticSource:
    """The built-in procedural clips (no download), rendered at the crop size."""

    def __init__(self, cfg: DataConfig, seed: int) -> None:
        from jepactl.data.synthetic import SyntheticVideoSource

        self.videos = SyntheticVideoSource(
            num_frames=cfg.num_frames,
            size=cfg.crop,
            seed=seed,
            length=cfg.synth.length,
            min_objects=cfg.synth.min_objects,
            max_objects=cfg.synth.max_objects,
            frame_stride=cfg.frame_stride,
        )
        self.num_frames = cfg.num_frames

    def __len__(self) -> int:
        return len(self.videos)

    def path(self, i: int) -> str:
        return f"synth:{i}"

    def clip_frames(self, i: int) -> int:
        return self.num_frames

    def load(self, i: int, seed: int) -> Sample:
        return self.videos[i]


class MixtureSource:
    """Several sources behind one index space: global index = offset of the source + local
    index. The weighted draw itself is the sampler's job (:mod:`jepactl.data.loader`)."""

    def __init__(self, parts: list[tuple[str, IndexedSource, float]]) -> None:
        self.names = [name for name, _, _ in parts]
        self.sources = [source for _, source, _ in parts]
        self.weights = [weight for _, _, weight in parts]
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, i: int) -> tuple[int, int]:
        part = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return part, i - self.offsets[part]

    def path(self, i: int) -> str:
        part, local = self.locate(i)
        return self.sources[part].path(local)

    def clip_frames(self, i: int) -> int:
        part, local = self.locate(i)
        return self.sources[part].clip_frames(local)

    def load(self, i: int, seed: int) -> Sample:
        part, local = self.locate(i)
        return self.sources[part].load(local, seed)


Source = IndexedSource | SyntheticSource | MixtureSource


def _by_kind(index: DatasetIndex, spec: ClipSpec) -> list[tuple[str, IndexedSource, float]]:
    """An index's entries split by clip length (one-frame images vs videos), each part
    weighted by its share of the entries: clips of different lengths cannot share a batch."""
    groups: dict[int, list] = {}
    for entry in index.entries:
        groups.setdefault(spec.frames_for(entry.path), []).append(entry)
    total = len(index.entries)
    return [
        (f"{index.name}[{frames}f]", IndexedSource(replace(index, entries=e), spec), len(e) / total)
        for frames, e in sorted(groups.items())
    ]


def _reader_options(name: str, cfg: DataConfig) -> dict[str, Any]:
    options: dict[str, Any] = {"split": cfg.split}
    if name == "ucf101":
        options["fold"] = cfg.fold
    return options


def recipe_datasets(cfg: DataConfig) -> list[str]:
    """The datasets a recipe's ``data`` section reads (none for ``synth``)."""
    if cfg.source == "synth":
        return []
    if cfg.source == "mixed":
        return list(cfg.mix)
    return [cfg.source]


def index_recipe_datasets(
    cfg: DataConfig,
    roots: Mapping[str, str] | None = None,
    hint: str = RECIPE_HINT,
) -> dict[str, DatasetIndex]:
    """Index every dataset of the recipe (``roots`` override ``cfg.roots``); every one that
    cannot be read is reported in one error (:func:`~jepactl.data.readers.read_datasets`)."""
    names = recipe_datasets(cfg)
    where = {**cfg.roots, **(roots or {})}
    return read_datasets(
        {name: _reader_options(name, cfg) for name in names},
        {name: where.get(name) for name in names},
        hint,
    )


def _parts(
    name: str, index: DatasetIndex, spec: ClipSpec
) -> list[tuple[str, IndexedSource, float]]:
    """One dataset as one source, or one per clip length if it mixes images and videos."""
    if not index.entries:
        raise ConfigError(f"{index.name} ({index.split}) at {index.root} has no usable entries")
    parts = _by_kind(index, spec)
    return parts if len(parts) > 1 else [(name, IndexedSource(index, spec), 1.0)]


def build_source(cfg: DataConfig, seed: int) -> Source:
    """The source a recipe's ``data`` section names. Reading the datasets' indexes happens
    here, so a missing or malformed dataset fails before any training, with the path it looked
    at; a mixture reports every dataset that cannot be read at once."""
    if cfg.source == "synth":
        return SyntheticSource(cfg, seed)
    spec = ClipSpec.from_config(cfg)
    if cfg.source == "mixed" and not cfg.mix:
        raise ConfigError("data.source=mixed needs data.mix, e.g. {ucf101: 0.2, ssv2: 0.6}")
    indexes = index_recipe_datasets(cfg)
    if cfg.source == "mixed":
        total = sum(cfg.mix.values())
        parts = [
            (part, source, weight * share / total)
            for name, weight in cfg.mix.items()
            for part, source, share in _parts(name, indexes[name], spec)
        ]
        return MixtureSource(parts)
    parts = _parts(cfg.source, indexes[cfg.source], spec)
    return parts[0][1] if len(parts) == 1 else MixtureSource(parts)


def replacement(source: Source, i: int, rng: np.random.Generator) -> int:
    """A random stand-in for a sample that failed to load, of the same kind: from the same
    dataset of a mixture, so a batch never mixes one-frame images with videos."""
    if isinstance(source, MixtureSource):
        part, _ = source.locate(i)
        return source.offsets[part] + int(rng.integers(len(source.sources[part])))
    return int(rng.integers(len(source)))


__all__ = [
    "ClipSpec",
    "IndexedSource",
    "MixtureSource",
    "Source",
    "SyntheticSource",
    "build_source",
    "index_recipe_datasets",
    "recipe_datasets",
    "replacement",
]

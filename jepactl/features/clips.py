"""The clips of one split of a benchmark, cut by its evaluation protocol.

The clip protocol is the reference's (§A.2) for every video benchmark:

* ``frames`` frames spread uniformly over the **whole** video (``linspace(0, L - 1, F)``
  truncated to integers, :func:`~jepactl.data.decode.uniform_indices`; a video shorter than
  that repeats its last frame); no frame stride, no fps logic;
* each frame resized while decoding so its shorter side is ``crop`` (bilinear), then a centre
  ``crop x crop`` crop (``views=3``: start, centre and end of the longer side, V-JEPA's
  multi-view evaluation; the reference used one view);
* ImageNet mean/std normalisation (applied on the device by
  :func:`~jepactl.data.loader.to_model_input`); no augmentation of any kind.

Images are one-frame clips, encoded through the encoder's tubelet-1 path (paper Appendix D).
The reference instead repeated every image to 16 frames and sent it through the video patch
embedding (and resized it bicubically); ``frames > 1`` on an image benchmark reproduces the
repetition.

:class:`EvalSource` yields the clips of one split as uint8 ``[views, frames, crop, crop, 3]``
tensors; :class:`EvalDataset` and :func:`eval_loader` decode them in DataLoader workers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from jepactl.config import canonical_dataset
from jepactl.data.readers import DatasetIndex
from jepactl.errors import ConfigError
from jepactl.features.benchmarks import Benchmark
from jepactl.features.registry import get_benchmark
from jepactl.utils import available_cpus, suggestion


@dataclass
class EvalSample:
    """One evaluation clip: uint8 ``clip`` ``[views, frames, crop, crop, 3]``."""

    clip: torch.Tensor
    label: int
    id: str


def _subset(n: int, limit: int | None) -> list[int]:
    """``limit`` positions spread evenly over ``range(n)`` (annotation files are often sorted
    by class, so the first ``limit`` entries could all be one class), or all of them."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return sorted({int(i) for i in np.linspace(0, n - 1, limit).round()})


class EvalSource:
    """The clips of one split of a benchmark, cut by the benchmark's evaluation protocol.

    ``source[i]`` is an :class:`EvalSample`; ``source.id(i)`` and ``source.path(i)`` cost no
    decoding. Dataset benchmarks index their reader once here (``roots`` maps a reader name
    to its root, else ``$JEPACTL_DATA/<name>`` is used); ``synth`` benchmarks render clips
    from :class:`~jepactl.data.synthetic.SyntheticVideoSource`. ``limit`` keeps that many
    clips, spread evenly over the split (for tests and demos).
    """

    def __init__(
        self,
        bench: str | Benchmark,
        split: str,
        roots: Mapping[str, str | os.PathLike[str]] | None = None,
        limit: int | None = None,
    ) -> None:
        self.bench = get_benchmark(bench)
        self.split = split
        self.reader_split = self.bench.reader_split(split)
        self.limit = limit
        self._entries: list[Any] = []
        self._synth: Any = None
        self._synth_first = 0
        self.root: Path | None = None
        self.missing: list[str] = []  # files the annotations list but the disk lacks
        if self.bench.reader == "synth":
            from jepactl.data.synthetic import SHAPES

            self._init_synth()
            self.classes = list(SHAPES)
            total = self._synth_count
        else:
            # roots by dataset name; an alias (imagenet100) names the dataset it stands for
            named = {canonical_dataset(k): v for k, v in (roots or {}).items()}
            index = self._index(named.get(self.bench.reader))
            if not index.entries:
                raise ConfigError(f"{index.name} ({index.split}) at {index.root} has no entries")
            self.root = index.root
            self.missing = list(index.missing)
            self.classes = list(index.classes)
            self._entries = index.entries
            total = len(index.entries)
        if len(self.classes) != self.bench.num_classes:
            raise ConfigError(
                f"benchmark {self.bench.name}: the {self.bench.reader} reader lists "
                f"{len(self.classes)} classes, the benchmark expects {self.bench.num_classes}"
            )
        self.positions = _subset(total, limit)
        self.num_total = total
        if len(self.positions) == total:  # a limit that keeps everything is no limit
            self.limit = None

    def _index(self, root: str | os.PathLike[str] | None) -> DatasetIndex:
        """The split's entries from the benchmark's reader; a ``synth-motion`` benchmark's
        clips are generated first (once, into ``root`` or the cache folder) and read as csv."""
        from jepactl.data.readers import OPTION_HINT, read_dataset

        if self.bench.reader == "synth-motion":
            from jepactl.features.synth_motion import ensure_dataset, spec_of

            folder = ensure_dataset(spec_of(self.bench), Path(root) if root else None)
            return read_dataset("csv", folder, split=self.reader_split)
        return read_dataset(  # a missing root is given with the command's --root NAME=PATH
            self.bench.reader, root, hint=OPTION_HINT, split=self.reader_split,
            **dict(self.bench.options),
        )  # fmt: skip

    def _init_synth(self) -> None:
        from jepactl.data.synthetic import SyntheticVideoSource

        opts = dict(self.bench.options)
        known = {"n_train", "n_val", "seed", "min_objects", "max_objects", "noise_std"}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ConfigError(
                f"benchmark {self.bench.name}: unknown synth option '{unknown[0]}'"
                f"{suggestion(unknown[0], known)}"
            )
        n_train, n_val = int(opts.get("n_train", 512)), int(opts.get("n_val", 128))
        seed = int(opts.get("seed", 0))
        if self.reader_split == "train":
            first, count, split_seed = 0, n_train, seed
        elif self.reader_split == "val":
            first, count, split_seed = n_train, n_val, seed + 1
        else:
            raise ConfigError(f"synth splits are 'train' and 'val', not '{self.reader_split}'")
        if count < 1:
            raise ConfigError(f"benchmark {self.bench.name}: split {self.split} has no clips")
        self._synth = SyntheticVideoSource(
            num_frames=self.bench.frames,
            size=self.bench.crop,
            seed=split_seed,
            length=n_train + n_val,
            min_objects=int(opts.get("min_objects", 1)),
            max_objects=int(opts.get("max_objects", 1)),
            noise_std=float(opts.get("noise_std", 0.02)),
        )
        self._synth_first = first
        self._synth_count = count
        self._synth_seed = split_seed

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def kind(self) -> Literal["video", "image", "synth"]:
        if self._synth is not None:
            return "synth"
        from jepactl.data.readers import IMAGE_EXTENSIONS

        return "image" if self._entries[0].path.lower().endswith(IMAGE_EXTENSIONS) else "video"

    def id(self, i: int) -> str:
        """The id of clip ``i`` (unique within the split), without decoding anything."""
        pos = self.positions[i]
        if self._synth is not None:
            return f"synth-{self._synth_seed}-{self._synth_first + pos}"
        return self._entries[pos].id

    def ids(self) -> list[str]:
        return [self.id(i) for i in range(len(self))]

    def path(self, i: int) -> str:
        """The file behind clip ``i`` (for error messages)."""
        pos = self.positions[i]
        if self._synth is not None:
            return f"synth:{self._synth_seed}:{self._synth_first + pos}"
        return self._entries[pos].path

    def fingerprint(self) -> str:
        """sha256 of the split's ids (and labels, for datasets), in order: a cache built from
        another version of the annotations, or another ``limit``, does not match."""
        h = hashlib.sha256()
        for i, pos in enumerate(self.positions):
            label = "" if self._synth is not None else str(self._entries[pos].label)
            h.update(f"{self.id(i)}\t{label}\n".encode())
        return h.hexdigest()

    def protocol(self) -> dict[str, Any]:
        """The clip protocol, as recorded in a feature cache (JSON-serialisable)."""
        b = self.bench
        out: dict[str, Any] = {
            "benchmark": b.name,
            "reader": b.reader,
            "split": self.split,
            "reader_split": self.reader_split,
            "options": {k: b.options[k] for k in sorted(b.options)},
            "frames": b.frames,
            "crop": b.crop,
            "views": b.views,
            "normalisation": "imagenet",
            "num_clips": len(self),
            "limit": self.limit,
        }
        if b.profile != "paper":  # (absent for the paper: older caches keep matching)
            out["profile"] = b.profile
        if self._synth is not None:
            out["source"] = (
                f"SyntheticVideoSource seed {self._synth_seed}, clips "
                f"[{self._synth_first}, {self._synth_first + self._synth_count}), rendered at "
                f"{b.crop}x{b.crop}"
            )
        else:
            out["frame_sampling"] = (
                "uniform over the whole video: linspace(0, L-1, frames)"
                if b.sampling == "uniform"
                else "the first frames: 0 .. frames-1"
            )
            out["resize"] = f"short side to {b.crop}, bilinear, while decoding"
            out["spatial"] = "centre crop" if b.views == 1 else "3 crops: start, centre, end"
            out["images"] = "one-frame clips" if b.frames == 1 else f"repeated to {b.frames}"
        return out

    def protocol_json(self) -> str:
        return json.dumps(self.protocol(), sort_keys=True)

    def __getitem__(self, i: int) -> EvalSample:
        from jepactl.data.augment import eval_transform

        b = self.bench
        pos = self.positions[i]
        if self._synth is not None:
            sample = self._synth[self._synth_first + pos]
            clip, label = sample.clip, sample.label
        else:
            from jepactl.data.decode import first_indices, read_clip, read_image, uniform_indices
            from jepactl.data.readers import IMAGE_EXTENSIONS

            entry = self._entries[pos]
            label = entry.label
            if entry.path.lower().endswith(IMAGE_EXTENSIONS):
                clip = read_image(entry.path, short_side=b.crop)
            else:
                sampler = uniform_indices if b.sampling == "uniform" else first_indices
                clip, _ = read_clip(entry.path, lambda n: sampler(n, b.frames), short_side=b.crop)
        views = eval_transform(clip, b.crop, b.views)
        if views.shape[1] == 1 and b.frames > 1:  # an image repeated to a static clip
            views = views.expand(-1, b.frames, -1, -1, -1).contiguous()
        return EvalSample(clip=views, label=int(label), id=self.id(i))


@dataclass
class EvalBatch:
    """Clips of several rows: ``clips`` uint8 ``[B, views, frames, crop, crop, 3]``."""

    rows: list[int]
    clips: torch.Tensor
    labels: torch.Tensor
    ids: list[str]

    def pin_memory(self) -> EvalBatch:
        return EvalBatch(self.rows, self.clips.pin_memory(), self.labels.pin_memory(), self.ids)


class EvalDataset(Dataset[tuple[int, EvalSample]]):
    """The clips ``rows`` of ``source`` (indices into the split), for a DataLoader.

    A clip that fails to decode raises :class:`~jepactl.data.decode.DecodeError` naming the
    file and the clip: evaluation never substitutes another clip for a broken one (that would
    change what the score measures), so the dataset must be fixed first.
    """

    def __init__(self, source: EvalSource, rows: Sequence[int]) -> None:
        self.source = source
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> tuple[int, EvalSample]:
        from jepactl.data.decode import DecodeError

        row = self.rows[k]
        try:
            return row, self.source[row]
        except (DecodeError, OSError) as exc:
            raise DecodeError(
                f"{self.source.bench.name}/{self.source.split}: clip {self.source.id(row)} "
                f"({self.source.path(row)}) failed to load: {exc}. Check the dataset with "
                "`jepactl data check`, fix or remove the file, and rerun (finished clips are kept)"
            ) from exc


def collate_eval(items: list[tuple[int, EvalSample]]) -> EvalBatch:
    return EvalBatch(
        rows=[row for row, _ in items],
        clips=torch.stack([s.clip for _, s in items]),
        labels=torch.tensor([s.label for _, s in items], dtype=torch.int64),
        ids=[s.id for _, s in items],
    )


def _eval_worker_init(_: int) -> None:
    torch.set_num_threads(1)


def eval_loader(
    source: EvalSource,
    rows: Sequence[int],
    batch_size: int,
    num_workers: int = 2,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of ``rows`` in the given order, decoded in ``num_workers`` worker processes
    (capped at the CPUs this process may use)."""
    num_workers = max(0, min(num_workers, available_cpus()))
    return DataLoader(
        EvalDataset(source, rows),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_eval,
        pin_memory=pin_memory,
        worker_init_fn=_eval_worker_init if num_workers else None,
        timeout=600 if num_workers else 0,
        prefetch_factor=4 if num_workers else None,
    )

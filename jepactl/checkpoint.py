"""Checkpoint files: atomic writes, independent snapshots, a resume that survives a torn file,
and RNG-state capture, all loadable with ``weights_only=True``.

A run's ``checkpoints/`` holds ``latest.pt`` (rewritten by rename at every checkpoint) and
``step_NNNNNNN.pt`` snapshots, each an independent file (a copy, never a hard link: one torn
file must not take a second one with it). Resuming takes the newest of them that loads:
``latest.pt``, else the snapshots from the newest down. A file that does not load (truncated,
empty, random bytes, pickled objects beyond tensors) is moved aside as ``NAME.corrupt`` with a
warning naming it, so it is never silently overwritten and never tried again.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml

from jepactl.config import Recipe, parse_recipe
from jepactl.errors import CheckpointError, ConfigError, one_line
from jepactl.formats import Format, FormatError
from jepactl.rundir import LATEST
from jepactl.utils import atomic_copy, atomic_write_bytes, atomic_write_text, suggestion

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "Found", "RunCheckpoint", "atomic_copy",
           "atomic_save", "atomic_write_bytes", "atomic_write_text", "candidates",
           "find_resumable", "load", "rng_state", "set_rng_state", "state_nbytes"]  # fmt: skip

CHECKPOINT_VERSION = 1
SNAPSHOT = re.compile(r"step_(\d+)\.pt")
#: Bytes a checkpoint takes beyond its tensors (pickled structure, zip headers, config).
OVERHEAD_BYTES = 1 << 20


def state_nbytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint state, plus a margin for the rest."""

    def walk(x: Any) -> int:
        if isinstance(x, torch.Tensor):
            return x.nelement() * x.element_size()
        if isinstance(x, dict):
            return sum(walk(v) for v in x.values())
        if isinstance(x, list | tuple):
            return sum(walk(v) for v in x)
        return 0

    return walk(obj) + OVERHEAD_BYTES


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to ``path`` atomically; a full disk is a one-line
    :class:`~jepactl.errors.DiskFullError`, found before writing where the size is known."""
    atomic_write_bytes(path, lambda f: torch.save(obj, f), state_nbytes(obj))


def load(
    path: Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Safe load: tensors, containers and primitives only (no pickled code). ``mmap`` reads
    tensors lazily, for a cheap look at metadata such as the saved config."""
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def rng_state() -> dict[str, Any]:
    """Every global generator's state, in weights_only-loadable types."""
    # the global RandomState is MT19937, whose state always has the legacy tuple form
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------
# Choosing the checkpoint to resume from
# --------------------------------------------------------------------------------------


def candidates(folder: Path) -> list[Path]:
    """``latest.pt``, then the snapshots from the newest step down (those that exist)."""
    snaps = [
        (int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := SNAPSHOT.fullmatch(p.name))
    ]
    latest = [folder / LATEST] if (folder / LATEST).is_file() else []
    return latest + [p for _, p in sorted(snaps, reverse=True)]


def why_unreadable(path: Path, exc: BaseException) -> str:
    """A short reason a checkpoint did not load."""
    if isinstance(exc, EOFError) or path.stat().st_size == 0:
        return "empty file"
    if not zipfile.is_zipfile(path):
        return "not a checkpoint archive (truncated, overwritten or another format)"
    if isinstance(exc, pickle.UnpicklingError):
        return "holds pickled objects other than tensors (refused: loading it could run code)"
    return one_line(exc)[:160]


#: The checkpoint's format (the ``version`` key; v1 is every checkpoint written so far).
CHECKPOINT_FORMAT = Format("checkpoint", CHECKPOINT_VERSION, key="version")

#: What every file of this format holds, and what resuming from one needs besides.
_ENCODER_KEYS = ("config", "student", "step")
_RESUME_KEYS = ("version", "step", "student", "optimizer", "config")


@dataclass
class RunCheckpoint:
    """One training checkpoint (``checkpoints/latest.pt`` or a ``step_N.pt`` snapshot).

    This module alone spells the file's keys: training writes ``to_state()``, and resuming,
    feature extraction and the checkpoint loader read :meth:`from_state` and get attributes.
    ``trained`` says which encoders trained (``None`` in files written before it was kept,
    see :meth:`trained_encoders`); ``next_step`` is where the data stream resumes.
    """

    step: int
    config: str  # the resolved recipe as YAML (authoritative; config.yaml is for people)
    student: Mapping[str, Any]
    teacher: Mapping[str, Any] | None = None
    trained: list[str] | None = None
    predictor: Mapping[str, Any] = field(default_factory=dict)
    terms: Mapping[str, Any] = field(default_factory=dict)
    optimizer: Mapping[str, Any] = field(default_factory=dict)
    rng: list[dict[str, Any]] = field(default_factory=list)
    next_step: int | None = None
    nonfinite_skipped: int = 0

    def to_state(self) -> dict[str, Any]:
        """The dict ``torch.save`` writes (loadable with ``weights_only=True``)."""
        return {
            "version": CHECKPOINT_FORMAT.version,
            "step": self.step,
            "student": self.student,
            "teacher": self.teacher,
            "trained_encoders": self.trained,
            "predictor": self.predictor,
            "terms": self.terms,
            "optimizer": self.optimizer,
            "rng": self.rng,
            "data": {"next_step": self.step if self.next_step is None else self.next_step},
            "nonfinite_skipped": self.nonfinite_skipped,
            "config": self.config,
        }

    @classmethod
    def from_state(cls, state: Any, path: Path | str) -> RunCheckpoint:
        """The record of a loaded file; ``ValueError`` for a file that is not a jepactl
        checkpoint, a one-line :class:`~jepactl.formats.NewerFormatError` for one written by
        a newer jepactl."""
        if not isinstance(state, dict):
            raise ValueError(f"holds a {type(state).__name__}, not a checkpoint")
        missing = [k for k in _ENCODER_KEYS if k not in state]
        if missing:
            raise ValueError(f"not a jepactl training checkpoint (no {', '.join(missing)})")
        s = CHECKPOINT_FORMAT.upgrade(state, path) if "version" in state else state
        data = s.get("data")
        trained = s.get("trained_encoders")
        return cls(
            step=int(s["step"]),
            config=str(s["config"]),
            student=s["student"],
            teacher=s.get("teacher"),
            trained=[str(t) for t in trained] if trained else None,
            predictor=s.get("predictor") or {},
            terms=s.get("terms") or {},
            optimizer=s.get("optimizer") or {},
            rng=list(s.get("rng") or []),
            next_step=int(data["next_step"]) if isinstance(data, dict) else None,
            nonfinite_skipped=int(s.get("nonfinite_skipped", 0)),
        )

    @classmethod
    def is_one(cls, state: Mapping[str, Any]) -> bool:
        """Whether a loaded file has this format's layout (not an upstream checkpoint's)."""
        return all(k in state for k in ("config", "student"))

    def weights(self, name: str) -> Mapping[str, Any] | None:
        """The state dict of encoder ``name`` (``student`` or ``teacher``), if it holds one."""
        sd = {"student": self.student, "teacher": self.teacher}.get(name)
        return sd if isinstance(sd, Mapping) else None

    def recipe(self) -> Recipe:
        """The run's recipe, as the checkpoint holds it (validated)."""
        return parse_recipe(yaml.safe_load(self.config))

    def trained_encoders(self, recipe: Recipe) -> list[str]:
        """Which encoders trained: the checkpoint says so; older ones are judged by whether
        ``recipe`` (the run's, :meth:`recipe`) trains an EMA teacher."""
        if self.trained:
            return list(self.trained)
        ema = recipe.objective.teacher == "ema"
        return ["student", "teacher"] if self.teacher is not None and ema else ["student"]


@dataclass
class Found:
    """The checkpoint a resume starts from."""

    path: Path
    checkpoint: RunCheckpoint


def check_state(state: Any, path: Path) -> RunCheckpoint:
    """The record of a loaded file, which must be a resumable jepactl training checkpoint:
    ``ValueError`` when it is not one, a one-line :class:`~jepactl.formats.NewerFormatError`
    for one from a newer format version."""
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a checkpoint")
    missing = [k for k in _RESUME_KEYS if k not in state]
    if missing:
        raise ValueError(f"not a jepactl training checkpoint (no {', '.join(missing)})")
    return RunCheckpoint.from_state(state, path)


def find_resumable(folder: Path, warn: Callable[[str], object]) -> Found | None:
    """The newest checkpoint in ``folder`` that loads, or None where there is none at all.

    Unreadable files are moved aside as ``NAME.corrupt`` with a warning. When files exist but
    none loads, a :class:`~jepactl.errors.CheckpointError` refuses to start over (that would
    overwrite the run's snapshots and metrics). A file this user may not read is an error too,
    not a reason to fall back.
    """
    problems = []
    for path in candidates(folder):
        try:
            found = Found(path, check_state(load(path), path))
        except PermissionError as exc:
            raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
        except (CheckpointError, FormatError):
            raise
        except Exception as exc:  # torn, empty, foreign or unsafe: try the next one
            reason = why_unreadable(path, exc) if not isinstance(exc, ValueError) else str(exc)
            aside = path.with_name(f"{path.name}.corrupt")
            os.replace(path, aside)
            problems.append(f"{path.name}: {reason}")
            warn(f"{path} cannot be loaded ({reason}); moved it to {aside.name}")
            continue
        if problems or path.name != LATEST:
            warn(f"resuming from {path} (step {found.checkpoint.step})")
        return found
    if not problems:
        problems = [f"{p.name} set aside earlier" for p in sorted(folder.glob("*.pt.corrupt"))]
    if problems:  # never restart over a run whose checkpoints were all unreadable
        raise CheckpointError(
            f"{folder} holds no readable checkpoint ({'; '.join(problems)}); move the run "
            "directory away to start over, or restore a checkpoint into it"
        )
    return None


#: Which of a run's encoders to evaluate: ``auto`` is the EMA teacher where it trained.
#: ``init``: the encoder as initialised, rebuilt from the run's seed (never trained).
#: ``reference``: what the reference scored (its ``target_encoder``): the EMA teacher, or the
#: initialisation of a run without one (never updated there); ``--profile reference``'s choice.
WEIGHTS: tuple[str, ...] = ("auto", "student", "teacher", "init", "reference")


def select_weights(requested: str, trained: Sequence[str], where: str = "the run") -> str:
    """``auto`` = the EMA teacher when it trained, else the student. Asking for the teacher of
    a run that trained none is an error: the reference scored its no-EMA runs on a teacher
    that was a never-trained copy of the initial student, and that must not happen silently;
    ``init`` (and ``reference`` for such a run) asks for exactly that, on purpose."""
    if requested not in WEIGHTS:
        raise ConfigError(f"unknown weights '{requested}'{suggestion(requested, WEIGHTS)}")
    if requested == "auto":
        return "teacher" if "teacher" in trained else "student"
    if requested == "reference":  # the reference's target_encoder: never updated without EMA
        return "teacher" if "teacher" in trained else "init"
    if requested == "init":
        return requested
    if requested not in trained:
        raise ConfigError(
            f"{where} trained no EMA {requested} (objective.teacher=none): only "
            f"{', '.join(trained)} weights were trained, and evaluating an untrained encoder "
            "would score a random network; use --weights student (or auto; --weights init scores "
            "that random network on purpose, as the reference did)"
        )
    return requested

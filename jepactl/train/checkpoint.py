"""Atomic checkpoint files and RNG-state capture, loadable with ``weights_only=True``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepactl.utils import atomic_write_bytes, atomic_write_text

__all__ = ["atomic_save", "atomic_write_bytes", "atomic_write_text", "load", "rng_state",
           "set_rng_state"]  # fmt: skip


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def load(
    path: Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Safe load: tensors, containers and primitives only (no pickled code). ``mmap`` reads
    tensors lazily, for a cheap look at metadata such as the saved config."""
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def rng_state() -> dict[str, Any]:
    """Every global generator's state, in weights_only-loadable types."""
    np_state = np.random.get_state()
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

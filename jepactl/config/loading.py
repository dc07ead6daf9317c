"""Recipe resolution: finding a recipe, its ``_base_`` chain, and ``--set`` overrides.

The shipped recipes' directory (:func:`recipes_root`, or ``$JEPACTL_RECIPES``), listing and
resolving names (:func:`list_recipes`, :func:`resolve_recipe_path`), reading a recipe with its
``_base_`` files into one plain dict (:func:`load_raw`, :func:`deep_merge`), and parsing and
applying ``--set a.b=c`` (:func:`parse_override`, :func:`apply_override`). Cut from
:mod:`jepactl.config` here because all of it works on plain YAML data, before any type is
known; the resolution order is the one :mod:`jepactl.config`'s docstring states, and that
module re-exports every name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from jepactl.errors import ConfigError
from jepactl.utils import close_match

# --------------------------------------------------------------------------------------
# Locating recipes
# --------------------------------------------------------------------------------------

RECIPE_SUFFIX = ".yaml"


def recipes_root() -> Path:
    """The directory holding the shipped recipes (package data, also after ``pip install .``).

    ``JEPACTL_RECIPES`` points elsewhere, e.g. at a lab's own recipe collection.
    """
    env = os.environ.get("JEPACTL_RECIPES")
    if env:
        return Path(env)
    return Path(str(resources.files("jepactl") / "recipes"))


def list_recipes(root: Path | None = None) -> list[str]:
    """Names (``single/baseline`` ...) of every runnable recipe; ``base/`` holds fragments."""
    root = root or recipes_root()
    names = [
        p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{RECIPE_SUFFIX}")
    ]
    return sorted(n for n in names if not n.startswith("base/"))


def resolve_recipe_path(name: str, root: Path | None = None) -> Path:
    """A recipe name (``mixed/baseline``) or a path to a YAML file."""
    root = root or recipes_root()
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    candidate = root / f"{name.removesuffix(RECIPE_SUFFIX)}{RECIPE_SUFFIX}"
    if candidate.is_file():
        return candidate
    close = close_match(name, list_recipes(root), cutoff=0.4)
    hint = f" Did you mean '{close}'?" if close else ""
    raise ConfigError(
        f"unknown recipe '{name}' (looked in {root}).{hint} Run `jepactl recipes` to list them."
    )


# --------------------------------------------------------------------------------------
# Loading and merging
# --------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: dicts recursively, everything else replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(path: Path, root: Path | None = None, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe and its ``_base_`` chain into one plain dict (not yet validated).

    ``_base_`` entries are resolved relative to the including file, then to the recipes root.
    """
    root = root or recipes_root()
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"_base_ cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            base_path = root / base
        if not base_path.is_file():
            base_path = root / f"{base}{RECIPE_SUFFIX}"
        if not base_path.is_file():
            raise ConfigError(f"{path}: _base_ '{base}' not found next to it or under {root}")
        merged = deep_merge(merged, load_raw(base_path, root, (*_seen, path)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], value). The value is parsed as YAML (ints, floats, lists...)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(
            f"--set {text}: the value is not valid YAML ({problem}); quote it, e.g. "
            f"--set '{key}=\"...\"'"
        ) from None
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[a][b]... = value``; list elements are addressed by their index (``masks.0.x``)."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, path[: i + 1])]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, path)] = value
    else:
        node[last] = value


def _list_index(node: list[Any], part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"--set {'.'.join(path)}: '{part}' is not an index of a list of {len(node)} items"
        )
    return int(part)

"""Names from outside the package: a recipe's dotted path, or an installed package's entry point.

A registry (objective terms, mask strategies, dataset readers, evaluation tasks) is a plain
dict of its built-in names. A :class:`Registry` adds two ways for a researcher's own code to
appear beside them without a fork:

* a **dotted path** wherever a recipe or a command names one: ``type: mylab.terms:CurvatureLoss``
  (``module:attribute``; the module must be importable, e.g. installed or on ``PYTHONPATH``);
* an **entry point** of an installed package, in the registry's group::

      [project.entry-points."jepactl.objectives"]
      curvature = "mylab.terms:CurvatureLoss"

  after which ``type: curvature`` works in a recipe, and ``jepactl recipes --components``
  lists it.

What an entry is depends on the registry (:attr:`Registry.kind`): a class for terms (a
:class:`~jepactl.objectives.Term` subclass) and mask strategies, a function for dataset readers,
an instance for evaluation tasks (a :class:`~jepactl.features.benchmarks.Benchmark`).

An entry point named like a built-in is an error naming both (a recipe's name must mean one
thing); a plugin that fails to import, or is not the kind of class the registry holds, is a
one-line :class:`~jepactl.errors.ConfigError` naming the plugin and its error. Nothing here
imports torch; a plugin is imported only when a recipe, a command or a listing asks for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Generic, Literal, TypeVar, cast

from jepactl.errors import ConfigError
from jepactl.utils import suggestion

V = TypeVar("V")

#: registry -> entry-point group
GROUPS = {
    "objectives": "jepactl.objectives",
    "masks": "jepactl.masks",
    "readers": "jepactl.readers",
    "tasks": "jepactl.tasks",
}

#: What a registry's entries are: classes, functions, or instances of ``base``.
Kind = Literal["class", "function", "instance"]


def is_dotted(name: str) -> bool:
    """``module:attribute`` (a recipe's way to name a class from outside the package)."""
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr)


@dataclass(frozen=True)
class Plugin:
    """An entry point of an installed package."""

    name: str
    value: str  # module:attribute
    dist: str  # the distribution that declares it, "name version"


@cache
def entry_points(group: str) -> tuple[Plugin, ...]:
    """The entry points of ``group`` over every installed distribution (read once)."""
    found = []
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        where = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "?"
        found.append(Plugin(ep.name, ep.value, where))
    return tuple(sorted(found, key=lambda p: p.name))


def import_object(spec: str, what: str) -> object:
    """``module:attribute`` imported; any failure is one line naming ``what`` and the error."""
    module_name, _, attr = spec.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"{what}: could not import {spec} ({type(exc).__name__}: {first})"
        ) from None
    return obj


def describe(value: object) -> str:
    """``module:qualname`` of a class or function; of an instance, its class's."""
    named = value if hasattr(value, "__qualname__") else type(value)
    return f"{named.__module__}:{named.__qualname__}"


class Registry(Generic[V]):
    """Built-in names, entry points of ``group``, and dotted paths, each checked to be what
    the registry holds (``kind``): a class (a ``base`` subclass where given; a ``Protocol``
    cannot be checked so), a function, or an instance of ``base``. ``what`` names one entry in
    messages ("objective term")."""

    def __init__(
        self,
        what: str,
        group: str,
        builtins: dict[str, V],
        base: type | None = None,
        kind: Kind = "class",
    ) -> None:
        self.what, self.group, self.builtins, self.base = what, group, builtins, base
        self.kind = kind

    def plugins(self) -> dict[str, Plugin]:
        """The installed entry points, refused if one takes a built-in name."""
        out: dict[str, Plugin] = {}
        for p in entry_points(self.group):
            if p.name in self.builtins:
                raise ConfigError(
                    f"{p.dist} registers {self.what} '{p.name}' ({p.value}, entry point group "
                    f"{self.group}), the name of the built-in {describe(self.builtins[p.name])}; "
                    "rename the entry point"
                )
            if p.name in out:
                raise ConfigError(
                    f"{self.what} '{p.name}' is registered twice, by {out[p.name].dist} "
                    f"({out[p.name].value}) and by {p.dist} ({p.value}); uninstall one"
                )
            out[p.name] = p
        return out

    def rows(self) -> list[tuple[str, str, str]]:
        """``(name, module:Class, origin)`` per name: ``built-in`` or the plugin's package."""
        out = [(n, describe(v), "built-in") for n, v in self.builtins.items()]
        out += [(n, p.value, p.dist) for n, p in self.plugins().items()]
        return out

    def names(self) -> list[str]:
        return [*self.builtins, *self.plugins()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            is_dotted(name) or name in self.builtins or name in self.plugins()
        )

    def is_plugin(self, name: str) -> bool:
        """``name`` is a dotted path or an installed package's entry point, not a built-in."""
        return name not in self.builtins and name in self

    def get(self, name: str, where: str = "") -> V:
        """What ``name`` means; an unknown name suggests the close one."""
        label = where or self.what
        plugins = self.plugins()  # first: an entry point shadowing a built-in is refused
        if is_dotted(name):
            return self._checked(import_object(name, label), name, label)
        if name in self.builtins:
            return self.builtins[name]
        if name in plugins:
            p = plugins[name]
            obj = import_object(p.value, f"{label}: plugin '{name}' of {p.dist}")
            return self._checked(obj, p.value, label)
        raise ConfigError(
            f"{label}: unknown {self.what} '{name}'{suggestion(name, self.names())} "
            f"(or name your own as module:{_ATTR[self.kind]})"
        )

    def _checked(self, obj: object, spec: str, label: str) -> V:
        base = "" if self.base is None else f"{self.base.__module__}.{self.base.__qualname__}"
        if self.kind == "class":
            if not isinstance(obj, type):
                raise ConfigError(f"{label}: {spec} is not a class")
            if self.base is not None and not issubclass(obj, self.base):
                raise ConfigError(f"{label}: {spec} is not a {base} subclass")
        elif self.kind == "function":
            if not callable(obj) or isinstance(obj, type):
                raise ConfigError(f"{label}: {spec} is not a function")
        elif self.base is not None and not isinstance(obj, self.base):
            raise ConfigError(f"{label}: {spec} is a {type(obj).__name__}, not a {base}")
        return cast("V", obj)


_ATTR: dict[Kind, str] = {"class": "Class", "function": "function", "instance": "NAME"}

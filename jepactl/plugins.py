"""Names from outside the package: a recipe's dotted path, or an installed package's entry point.

A registry (objective terms, mask strategies) is a plain dict of its built-in names. A
:class:`Registry` adds two ways for a researcher's own code to appear beside them without a
fork:

* a **dotted path** wherever a recipe names a class: ``type: mylab.terms:CurvatureLoss``
  (``module:attribute``; the module must be importable, e.g. installed or on ``PYTHONPATH``);
* an **entry point** of an installed package, in the registry's group::

      [project.entry-points."jepactl.objectives"]
      curvature = "mylab.terms:CurvatureLoss"

  after which ``type: curvature`` works in a recipe, and ``jepactl terms`` lists it.

An entry point named like a built-in is an error naming both (a recipe's name must mean one
thing); a plugin that fails to import, or is not the kind of class the registry holds, is a
one-line :class:`~jepactl.errors.ConfigError` naming the plugin and its error. Nothing here
imports torch; a plugin is imported only when a recipe or a listing asks for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Generic, TypeVar, cast

from jepactl.errors import ConfigError
from jepactl.utils import suggestion

T = TypeVar("T")

#: registry -> entry-point group
GROUPS = {"objectives": "jepactl.objectives", "masks": "jepactl.masks"}


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


class Registry(Generic[T]):
    """Built-in names, entry points of ``group``, and dotted paths, all checked to be classes
    (``base`` subclasses where given; a ``Protocol`` cannot be checked so). ``what`` names one
    entry in messages ("objective term")."""

    def __init__(
        self, what: str, group: str, builtins: dict[str, type[T]], base: type | None = None
    ) -> None:
        self.what, self.group, self.builtins, self.base = what, group, builtins, base

    def plugins(self) -> dict[str, Plugin]:
        """The installed entry points, refused if one takes a built-in name."""
        out: dict[str, Plugin] = {}
        for p in entry_points(self.group):
            if p.name in self.builtins:
                b = self.builtins[p.name]
                raise ConfigError(
                    f"{p.dist} registers {self.what} '{p.name}' ({p.value}, entry point group "
                    f"{self.group}), the name of the built-in {b.__module__}:{b.__qualname__}; "
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
        out = [
            (n, f"{c.__module__}:{c.__qualname__}", "built-in") for n, c in self.builtins.items()
        ]
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

    def get(self, name: str, where: str = "") -> type[T]:
        """The class ``name`` means; an unknown name suggests the close one."""
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
            "(or name your own class as module:Class)"
        )

    def _checked(self, obj: object, spec: str, label: str) -> type[T]:
        if not isinstance(obj, type):
            raise ConfigError(f"{label}: {spec} is not a class")
        if self.base is not None and not issubclass(obj, self.base):
            raise ConfigError(
                f"{label}: {spec} is not a {self.base.__module__}.{self.base.__qualname__} subclass"
            )
        return cast("type[T]", obj)

"""A JSON Schema (draft 2020-12) of a resolved recipe, for editors and other tools.

Built from what validates a recipe, so the two cannot drift apart: the dataclasses of
:mod:`jepactl.config.schema` give every key, its type (a ``Literal`` becomes an ``enum``), its
default and its description: the ``#`` comment above or beside the field (read with :mod:`ast`
and :mod:`tokenize`), else the sentences of the section's docstring that name the field as
````name````; a section's class docstring describes the section. Objective
terms and mask strategies are described by their classes' constructors, read the way
:func:`~jepactl.config.validation.validate_kwargs` reads them. Every mapping the validator
closes (a section, a term's or a strategy's parameters) has ``additionalProperties: false``.

This module knows no registry (the core imports no component): the caller passes the term and
mask classes and the names a string key may take (``jepactl recipes --schema`` does).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import tokenize
import types
import typing
from collections import abc
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from jepactl.config.schema import Recipe
from jepactl.config.validation import _init_parameters, to_dict

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: A plugin named by its dotted path, ``module:attribute`` (:func:`jepactl.plugins.is_dotted`).
DOTTED = r"^[^:\s]+:[^:\s]+$"
PLUGIN_NOTE = (
    "A plugin named by its dotted path (module:Class) takes its own constructor's parameters, "
    "which this schema does not describe."
)

Schema = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Choices:
    """The names a string key (or the keys of a mapping) may take, and whether a plugin's
    dotted path ``module:attribute`` is accepted besides them."""

    names: tuple[str, ...]
    dotted: bool = False


# --------------------------------------------------------------------------------------
# Source reading: field comments and class docstrings
# --------------------------------------------------------------------------------------


@cache
def _module_docs(module_name: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Per class of a module: its docstring and each annotated field's ``#`` comment (the
    comment lines right above the field, then any comment on the field's own lines)."""
    source = inspect.getsource(sys.modules[module_name])
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, the line is only a comment)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#:").strip()
            comments[tok.start[0]] = (text, tok.line.strip().startswith("#"))
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above: list[str] = []
            line = stmt.lineno - 1
            while line in comments and comments[line][1]:
                above.insert(0, comments[line][0])
                line -= 1
            end = stmt.end_lineno or stmt.lineno
            beside = [
                comments[n][0]
                for n in range(stmt.lineno, end + 1)
                if n in comments and not comments[n][1]
            ]
            text = " ".join(t for t in (*above, *beside) if t)
            if text:
                fields[stmt.target.id] = text
        out[node.name] = (ast.get_docstring(node) or "", fields)
    return out


def class_docs(cls: type) -> tuple[str, dict[str, str]]:
    """``cls``'s own docstring (not the signature a dataclass makes up) and field comments."""
    try:
        return _module_docs(cls.__module__).get(cls.__name__, ("", {}))
    except (OSError, TypeError, KeyError, SyntaxError):  # no source (a zipped or frozen module)
        return inspect.cleandoc(cls.__dict__.get("__doc__") or ""), {}


def first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


def mentions(doc: str, name: str) -> str:
    """The sentences of a section's docstring that name the field ``name`` (````name````),
    for a field without a comment of its own."""
    sentences = re.split(r"(?<=[.;])\s+(?=[A-Z`(])", " ".join(doc.split()))
    return " ".join(s for s in sentences if re.search(rf"``{re.escape(name)}[.:`]", s))


def _described(schema: Schema, text: str) -> Schema:
    return {**schema, "description": " ".join(text.split())} if text.strip() else schema


# --------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------

_SCALARS: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _enum_values(tp: Any) -> list[Any] | None:
    """The values of a ``Literal`` or ``bool`` (``None`` for any other type)."""
    if tp is bool:
        return [True, False]
    if get_origin(tp) is Literal:
        return list(get_args(tp))
    return None


def _enum(values: list[Any]) -> Schema:
    kinds = {_SCALARS.get(type(v), "null") for v in values}
    return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}


def type_schema(tp: Any) -> Schema:
    """The JSON Schema of a value the validator accepts for the annotation ``tp``; the
    validator's lossless conversions (``3.0`` for an int) are JSON Schema's too."""
    origin = get_origin(tp)
    if tp is Any:
        return {}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        nullable = len(args) < len(get_args(tp))
        enums = [_enum_values(a) for a in args]
        if all(e is not None for e in enums):  # bool | Literal["auto"]: one enum
            values = [v for e in enums for v in e or []]
            return _enum(values + [None] * nullable)
        parts = [type_schema(a) for a in args]
        if len(parts) == 1 and isinstance(parts[0].get("type"), str) and nullable:
            return {**parts[0], "type": [parts[0]["type"], "null"]}
        return {"anyOf": parts + [{"type": "null"}] * nullable}
    if origin is Literal:
        return _enum(list(get_args(tp)))
    params = get_args(tp)
    if origin in (list, abc.Sequence, tuple):
        if origin is tuple and params and params[-1] is not Ellipsis:
            items = [type_schema(a) for a in params]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "items": False}
        return {"type": "array", "items": type_schema(params[0] if params else Any)}
    if origin is dict:
        return {"type": "object", "additionalProperties": type_schema(params[1] if params else Any)}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return section_schema(tp)
    return {}  # a type JSON cannot name: any value, checked by jepactl itself


# --------------------------------------------------------------------------------------
# Sections, terms, mask strategies
# --------------------------------------------------------------------------------------


def section_schema(cls: type, where: str = "", overrides: Mapping[str, Schema] = {}) -> Schema:
    """A dataclass section: every field with its type, default and comment; no other key.
    ``overrides`` replaces the schema of a field named by its dotted path (``masks``)."""
    doc, comments = class_docs(cls)
    hints = typing.get_type_hints(cls)
    properties: dict[str, Schema] = {}
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        tp = hints[f.name]
        is_section = isinstance(tp, type) and dataclasses.is_dataclass(tp)
        if is_section:
            prop = section_schema(tp, path, overrides)
        else:
            prop = dict(overrides[path]) if path in overrides else type_schema(tp)
            if f.default is not dataclasses.MISSING:
                prop["default"] = to_dict(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                prop["default"] = to_dict(f.default_factory())
        own = comments.get(f.name) or ("" if is_section else mentions(doc, f.name))
        added = prop.get("description", "")  # a section's docstring, or what an override says
        properties[f.name] = _described(prop, " ".join(t for t in (own, added) if t))
    schema: Schema = {"title": cls.__name__, "type": "object", "properties": properties}
    schema["additionalProperties"] = False
    return _described(schema, doc)


def component_schema(cls: type, key: str, name: str) -> Schema:
    """A registered class's parameters, from its constructor; ``key`` (``type``,
    ``strategy``) names the class in the recipe."""
    params = _init_parameters(cls)
    properties: dict[str, Schema] = {key: {"const": name}}
    for pname, (param, hint) in params.items():
        prop = type_schema(hint)
        if param.default is not inspect.Parameter.empty:
            prop["default"] = to_dict(param.default)
        properties[pname] = prop
    title = f"{name} ({cls.__module__}:{cls.__qualname__})"
    schema: Schema = {"title": title, "type": "object", "properties": properties}
    schema["additionalProperties"] = False
    required = [n for n, (p, _) in params.items() if p.default is inspect.Parameter.empty]
    if required:
        schema["required"] = required
    return _described(schema, first_paragraph(inspect.getdoc(cls) or ""))


def _dispatch(key: str, names: Iterable[str], prefix: str) -> Schema:
    """The value of ``key`` is a registered name or a dotted path; each name selects its
    class's schema (``if``/``then``, so an error names the key that is wrong)."""
    names = list(names)
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"anyOf": [_enum(names), {"type": "string", "pattern": DOTTED}]}},
        "allOf": [
            {
                "if": {"properties": {key: {"const": n}}, "required": [key]},
                "then": {"$ref": f"#/$defs/{prefix}.{n}"},
            }
            for n in names
        ],
    }


def terms_schema(terms: Mapping[str, type]) -> Schema:
    """``objective.terms``: a built-in (or installed plugin) name with its parameters, or any
    name whose ``type`` names the class; ``false`` removes a term, ``true``/``null`` mean the
    defaults (recipe files; a resolved recipe holds mappings only)."""
    removal = _described({"type": ["boolean", "null"]}, "false removes the term (one a _base_ "
                         "recipe added); true or an empty value uses its defaults")  # fmt: skip
    typed: Schema = {"$ref": "#/$defs/term"}

    def entry(params: Schema, text: str) -> Schema:
        return _described({"if": {"type": "object"}, "then": params, "else": removal}, text)

    properties = {}
    for name, cls in terms.items():
        own: Schema = {"$ref": f"#/$defs/term.{name}"}
        by_type = {"if": {"required": ["type"]}, "then": typed, "else": own}
        properties[name] = entry(by_type, first_paragraph(inspect.getdoc(cls) or ""))
    return {
        "type": "object",
        "properties": properties,
        "patternProperties": {DOTTED: {"type": ["object", "boolean", "null"]}},
        "additionalProperties": entry(typed, "A term under a name of its own: `type` names it."),
        "description": f"Keys: {', '.join(terms)}, or any name with a `type`. {PLUGIN_NOTE}",
    }


def masks_schema(masks: Mapping[str, type]) -> Schema:
    """``masks``: the mask groups, each naming its ``strategy``."""
    return {
        "type": "array",
        "items": {"$ref": "#/$defs/mask"},
        "description": f"One entry per mask group; strategies: {', '.join(masks)}. {PLUGIN_NOTE}",
    }


def _named(choices: Choices, schema: Schema) -> Schema:
    """``schema`` of a string key (or a mapping's keys) restricted to ``choices``."""
    names: Schema = _enum(list(choices.names))
    if choices.dotted:
        names = {"anyOf": [names, {"type": "string", "pattern": DOTTED}]}
    return {**schema, "propertyNames": names} if schema.get("type") == "object" else names


def recipe_schema(
    terms: Mapping[str, type],
    masks: Mapping[str, type],
    choices: Mapping[str, Choices] = {},
    schema_id: str = "urn:jepactl:recipe",
) -> Schema:
    """The JSON Schema of a resolved recipe (what ``jepactl show-recipe`` prints), with the
    term classes ``terms`` and mask strategy classes ``masks`` by recipe name, and the names
    the string keys in ``choices`` (dotted paths: ``data.source``, ``data.mix``) may take."""
    hints = typing.get_type_hints(Recipe)
    overrides = {"objective.terms": terms_schema(terms), "masks": masks_schema(masks)}
    for path, named in choices.items():
        section, _, name = path.partition(".")
        tp = typing.get_type_hints(hints[section])[name] if name else hints[section]
        overrides[path] = _named(named, type_schema(tp))
    schema = section_schema(Recipe, overrides=overrides)
    schema["properties"]["_base_"] = {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        "description": "Recipe files only (a resolved recipe has none): the recipes this one "
        "is merged onto, relative to this file, then to the recipes root.",
    }
    defs: dict[str, Schema] = {"term": _dispatch("type", terms, "term")}
    defs["mask"] = _dispatch("strategy", masks, "mask")
    defs.update({f"term.{n}": component_schema(c, "type", n) for n, c in terms.items()})
    defs.update({f"mask.{n}": component_schema(c, "strategy", n) for n, c in masks.items()})
    return {
        "$schema": DRAFT,
        "$id": schema_id,
        **schema,
        "title": "jepactl recipe",
        "description": "A jepactl pretraining recipe, as `jepactl show-recipe NAME` prints it "
        "resolved (docs/recipes.md). Generated by `jepactl recipes --schema`.",
        "$defs": defs,
    }

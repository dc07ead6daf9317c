"""``jepactl recipes --schema``: a JSON Schema (draft 2020-12) every resolved recipe meets, that
refuses what jepactl refuses (with jepactl's own one-line error), and that states the
dataclasses' defaults and allowed values (docs/recipes.md, Editor support)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.config import (
    ModelConfig,
    OptimConfig,
    Recipe,
    TrackingConfig,
    TrainConfig,
    list_recipes,
    recipes_root,
    to_dict,
)
from jepactl.masks import MASK_STRATEGIES
from jepactl.objectives import TERMS

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    res = cli("recipes", "--schema")
    assert res.exit_code == 0, res.output
    return dict(json.loads(res.stdout))


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema)


def shown(recipe: str) -> dict[str, Any]:
    """The recipe as `jepactl show-recipe` prints it, parsed."""
    res = cli("show-recipe", recipe)
    assert res.exit_code == 0, res.output
    return dict(yaml.safe_load(res.stdout))


def test_the_schema_is_a_draft_2020_12_schema(schema: dict[str, Any]) -> None:
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("urn:jepactl:recipe-schema:")
    assert schema["title"] == "jepactl recipe"
    assert schema["additionalProperties"] is False


def test_every_shipped_recipe_resolved_validates(validator: Draft202012Validator) -> None:
    failures = [
        f"{name}: {error.json_path}: {error.message}"
        for name in list_recipes()
        for error in validator.iter_errors(shown(name))
    ]
    assert not failures, "\n".join(failures)


def test_every_shipped_recipe_file_validates_as_written(validator: Draft202012Validator) -> None:
    """What an editor checks: the files themselves (``_base_``, fragments), unresolved."""
    files = sorted(recipes_root().rglob("*.yaml"))
    assert len(files) > len(list_recipes())  # the base/ fragments are checked too
    failures = [
        f"{path.name}: {error.json_path}: {error.message}"
        for path in files
        for error in validator.iter_errors(yaml.safe_load(path.read_text()))
    ]
    assert not failures, "\n".join(failures)


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value


MISTAKES = [
    # (dotted key, value, where jsonschema points, jepactl's close-match suggestion)
    ("optim.lrr", 1e-3, "$.optim", "unknown key 'optim.lrr'; did you mean 'lr'?"),
    ("model.pred_embed", "mlpp", "$.model.pred_embed", "did you mean 'mlp'?"),
    ("objective.terms.jepa.wieght", 1.0, "$.objective.terms.jepa", "did you mean 'weight'?"),
    ("masks.0.strategy", "multiblok", "$.masks[0].strategy", "did you mean 'multiblock'?"),
]


@pytest.mark.parametrize(
    ("key", "value", "json_path", "hint"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_a_mistake_fails_the_schema_and_gets_jepactls_one_line(
    validator: Draft202012Validator, tmp_path: Path, key: str, value: Any, json_path: str, hint: str
) -> None:
    recipe = shown("synth/baseline")
    assert not list(validator.iter_errors(recipe))
    bad = copy.deepcopy(recipe)
    _set(bad, key, value)
    error = best_match(validator.iter_errors(bad))
    assert error is not None and error.json_path == json_path
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    res = cli("show-recipe", str(path))
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jepactl: error: "), res.stderr
    assert hint in lines[0] and "Traceback" not in res.output


def _node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        node = node["properties"][part]
    return node


def test_every_field_has_its_dataclass_default(schema: dict[str, Any]) -> None:
    def walk(cls: type, where: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            path = f"{where}.{f.name}" if where else f.name
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], path)
                continue
            default = getattr(cls(), f.name)
            assert _node(schema, path)["default"] == to_dict(default), path

    walk(Recipe, "")


def test_enums_and_descriptions_come_from_the_schema_module(schema: dict[str, Any]) -> None:
    assert _node(schema, "model.pred_embed")["enum"] == ["linear", "mlp"]
    hint = typing.get_type_hints(ModelConfig)["positions"]
    assert _node(schema, "model.positions")["enum"] == list(typing.get_args(hint))
    assert _node(schema, "train.compile")["enum"] == [True, False, "auto"]
    assert _node(schema, "train.precision")["default"] == TrainConfig().precision
    sinks = typing.get_args(typing.get_type_hints(TrackingConfig)["sinks"])[0]
    assert _node(schema, "tracking.sinks")["items"]["enum"] == list(typing.get_args(sinks))
    assert _node(schema, "optim.clip_grad")["type"] == ["number", "null"]
    # a field's `#` comment (beside it, or the block above it), a section's docstring
    assert _node(schema, "train.snapshot_every")["description"] == (
        "steps between kept snapshots (0 = none)"
    )
    assert _node(schema, "model.pred_mask_tokens")["description"].startswith("The reference")
    assert _node(schema, "optim")["description"] == inspect.getdoc(OptimConfig)
    assert "bf16" in _node(schema, "train.precision")["description"]
    # a field without a comment: the sentences of its section's docstring that name it
    assert "``min_rank``" in _node(schema, "monitor.min_rank")["description"]
    assert (
        _node(schema, "data.synth")["description"]
        == "The built-in procedural source (no download)."
    )


def test_terms_and_mask_strategies_come_from_their_constructors(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    assert {f"term.{n}" for n in TERMS} | {f"mask.{n}" for n in MASK_STRATEGIES} <= set(defs)
    for prefix, registry in (("term", TERMS), ("mask", MASK_STRATEGIES)):
        for name, cls in registry.items():
            params = defs[f"{prefix}.{name}"]["properties"]
            assert defs[f"{prefix}.{name}"]["additionalProperties"] is False
            for pname, param in inspect.signature(cls.__init__).parameters.items():
                if param.default is not inspect.Parameter.empty:
                    assert params[pname]["default"] == to_dict(param.default), (name, pname)
    assert defs["term.jepa_context"]["properties"]["weight"]["default"] == 0.5
    assert defs["term.ld"]["properties"]["input"]["enum"] == ["all", "dynamics"]
    assert defs["mask.multiblock"]["properties"]["aspect_ratio"]["default"] == [0.75, 1.5]
    assert _node(schema, "optim.lr")["default"] == OptimConfig().lr


def test_recipes_help_says_what_to_do_with_the_schema() -> None:
    res = cli("recipes", "--help")
    assert res.exit_code == 0
    assert "--schema" in res.output and "schema.json" in res.output

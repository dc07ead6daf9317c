"""An encoder exported for use outside jepactl: ``model.safetensors`` plus ``config.json``.

``config.json`` holds the :class:`~jepactl.models.vit.VideoViT` constructor arguments
(``vit``), so :func:`load_exported` rebuilds the encoder with one call, and a timm-style
``model_name`` (``vit_base_patch16``) where the transformer has a standard ViT size. The name
says the size only: the weights are this ViT's (3D patch embedding over ``tubelet`` frames,
3D RoPE, no cls token, no absolute positions), not a timm checkpoint.

Both files are written by rename, the weights first; ``config.json`` records the weights'
sha256, so a crash between the two renames (a new weights file beside an old config) is
refused at load instead of giving another network.

``config.json`` is one :class:`ExportConfig` (with the :class:`ExportSource` of an encoder
exported from a run), and this module alone spells its keys: :func:`save_exported` writes it,
:func:`read_export_config` reads it through :data:`EXPORT_CONFIG`, so a config of a newer
jepactl is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from jepactl.errors import CheckpointError, ConfigError
from jepactl.formats import Format, FormatError
from jepactl.models.vit import VideoViT
from jepactl.utils import atomic_write_bytes, atomic_write_text, file_sha256, suggestion

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: What ``jepactl export --format`` writes (the name of a file format of the weights).
FORMATS: tuple[str, ...] = ("safetensors",)
#: ``config.json``'s ``format``: what marks a folder as a jepactl encoder export.
FORMAT = "jepactl-encoder"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: The export config's format (version 1 since the first release; always stamped).
EXPORT_CONFIG = Format("encoder export config", FORMAT_VERSION)
_MARK = "format"

#: (width, depth, heads, mlp ratio) of the standard ViT sizes, by timm's size word.
STANDARD_SIZES: dict[tuple[int, int, int, float], str] = {
    (192, 12, 3, 4.0): "tiny",
    (384, 12, 6, 4.0): "small",
    (768, 12, 12, 4.0): "base",
    (1024, 24, 16, 4.0): "large",
    (1280, 32, 16, 4.0): "huge",
    (1408, 40, 16, 48 / 11): "giant",
}


def check_format(name: str) -> str:
    """``name`` if it is an export format, else a one-line :class:`ConfigError`."""
    if name not in FORMATS:
        raise ConfigError(f"unknown export format '{name}'{suggestion(name, FORMATS)}")
    return name


def timm_name(vit: Mapping[str, Any]) -> str | None:
    """``vit_<size>_patch<p>`` for VideoViT arguments of a standard size with one output
    (no deep supervision), else ``None``."""
    key = (vit["embed_dim"], vit["depth"], vit["num_heads"], float(vit["mlp_ratio"]))
    size = STANDARD_SIZES.get(key)
    blocks = vit.get("out_blocks")
    if size is None or (blocks and list(blocks) != [vit["depth"]]):
        return None
    return f"vit_{size}_patch{vit['patch_size']}"


@dataclass(frozen=True)
class ExportInput:
    """What the exported encoder takes: ``layout`` in words, the normalisation and the clip
    shape it was trained on."""

    layout: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    frames: int
    frame_stride: int
    crop: int


@dataclass(frozen=True)
class ExportSource:
    """Where an exported encoder comes from: the jepactl that wrote it, the run, its recipe's
    name, the step and weights (student or teacher) of the checkpoint and its sha256, and the
    input convention."""

    jepactl_version: str
    recipe: str
    run: str
    step: int
    weights: str
    checkpoint_sha256: str
    input: ExportInput


@dataclass(frozen=True)
class ExportConfig:
    """``config.json`` of an export folder: the :class:`VideoViT` arguments (``vit``), the
    size name (``model_name``, ``None`` for no standard size), the weights file and its
    sha256, and where the encoder comes from (``source``; ``None`` for an encoder saved
    directly with :func:`save_exported`)."""

    architecture: str
    model_name: str | None
    patch_size: int
    tubelet: int
    out_dim: int
    vit: dict[str, Any]
    source: ExportSource | None
    weights_file: str
    weights_sha256: str

    def to_json(self) -> dict[str, Any]:
        """The config as written: the format mark and version first, the source's fields
        between ``vit`` and the weights (the key order of every release)."""
        head = {_MARK: FORMAT, EXPORT_CONFIG.key: EXPORT_CONFIG.version}
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != _SOURCE}
        weights = {k: data.pop(k) for k in _WEIGHTS}
        source = asdict(self.source) if self.source is not None else {}
        return {**head, **data, **source, **weights}

    @classmethod
    def from_json(cls, data: object, where: Path) -> ExportConfig:
        """The config ``data`` read from ``where``; a :class:`ConfigError` for a file that is
        no encoder export, a :class:`~jepactl.formats.NewerFormatError` for one of a newer
        jepactl, a :class:`~jepactl.formats.FormatError` for a missing or ill-typed key."""
        if not isinstance(data, dict) or data.get(_MARK) != FORMAT:
            raise ConfigError(f"{where} is not a jepactl encoder export (no {_MARK}: {FORMAT})")
        record = EXPORT_CONFIG.upgrade(data, where)
        hints = typing.get_type_hints(cls)
        values = {
            f.name: _typed(_get(record, f.name, where), hints[f.name], f.name, where)
            for f in fields(cls)
            if f.name != _SOURCE
        }
        given = any(f.name in record for f in fields(ExportSource))
        return cls(**values, source=_read(ExportSource, record, where) if given else None)


#: The field whose own fields are written in the config's top level (between vit and weights).
_SOURCE = "source"
_WEIGHTS = ("weights_file", "weights_sha256")
_Record = TypeVar("_Record", bound="DataclassInstance")


def _get(record: Mapping[str, Any], name: str, where: Path) -> Any:
    """``record[name]``; a one-line :class:`FormatError` when it has none."""
    if name not in record:
        raise FormatError(
            f"{where}: the {EXPORT_CONFIG.name} has no {name}; rerun `jepactl export`"
        )
    return record[name]


def _read(kind: type[_Record], record: Mapping[str, Any], where: Path) -> _Record:
    """The dataclass ``kind`` of ``record``, each field checked against its annotation."""
    hints = typing.get_type_hints(kind)
    return kind(
        **{
            f.name: _typed(_get(record, f.name, where), hints[f.name], f.name, where)
            for f in fields(kind)
        }
    )


def _typed(value: Any, hint: Any, name: str, where: Path) -> Any:
    """``value`` as the annotation ``hint`` reads it (a JSON list as a tuple, an object as a
    dataclass); a one-line :class:`FormatError` when it is of another kind."""
    if isinstance(hint, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(a for a in options if a is not type(None))
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and is_dataclass(hint):
        if isinstance(value, dict):
            return _read(hint, value, where)
    elif origin is tuple:
        if isinstance(value, list) and all(_is_number(v) for v in value):
            return tuple(value)
    elif origin is dict:
        if isinstance(value, dict):
            return value
    elif isinstance(value, hint) and not isinstance(value, bool):
        return value
    raise FormatError(
        f"{where}: the {EXPORT_CONFIG.name}'s {name} is {value!r}; rerun `jepactl export`"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def save_exported(
    encoder: VideoViT, vit: Mapping[str, Any], out: Path, source: ExportSource | None = None
) -> Path:
    """Write ``encoder`` (built with the arguments ``vit``) to ``out``: the weights as
    safetensors, then ``config.json``, an :class:`ExportConfig` with ``vit``, the size name
    and ``source`` (version, run, step, input convention...). Returns the config's path."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in encoder.state_dict().items()}
    data = save(tensors, metadata={"format": "pt"})
    atomic_write_bytes(out / WEIGHTS_FILE, lambda f: f.write(data), len(data))
    config = ExportConfig(
        architecture=type(encoder).__name__,
        model_name=timm_name(vit),
        patch_size=vit["patch_size"],
        tubelet=vit["tubelet"],
        out_dim=encoder.out_dim,
        vit=dict(vit),
        source=source,
        weights_file=WEIGHTS_FILE,
        weights_sha256=hashlib.sha256(data).hexdigest(),
    )
    atomic_write_text(out / CONFIG_FILE, json.dumps(config.to_json(), indent=2) + "\n")
    return out / CONFIG_FILE


def read_export_config(folder: Path) -> ExportConfig:
    """The ``config.json`` of an export folder, checked to be one (and of a format this
    jepactl reads)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{folder} holds no {CONFIG_FILE}; make one with `jepactl export RUN`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return ExportConfig.from_json(data, path)


def load_exported(folder: Path | str, device: torch.device | str = "cpu") -> VideoViT:
    """The encoder of an export folder, in eval mode: ``VideoViT(**config.vit)`` with the
    safetensors weights (every key must match). Input: float ``[B, 3, T, H, W]``,
    normalised as ``config.json``'s ``input`` says."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_export_config(folder)
    weights = folder / config.weights_file
    if not weights.is_file():
        raise ConfigError(f"{folder} holds no {weights.name}; rerun `jepactl export`")
    if file_sha256(weights) != config.weights_sha256:
        raise CheckpointError(
            f"{weights} is not the file {CONFIG_FILE} describes (an interrupted export?); "
            "rerun `jepactl export`"
        )
    encoder = VideoViT(**config.vit)
    encoder.load_state_dict(load_file(weights, device="cpu"))
    return encoder.eval().to(device)

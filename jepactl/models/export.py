"""An encoder exported for use outside jepactl: ``model.safetensors`` plus ``config.json``.

``config.json`` holds the :class:`~jepactl.models.vit.VideoViT` constructor arguments
(``vit``), so :func:`load_exported` rebuilds the encoder with one call, and a timm-style
``model_name`` (``vit_base_patch16``) where the transformer has a standard ViT size. The name
says the size only: the weights are this ViT's (3D patch embedding over ``tubelet`` frames,
3D RoPE, no cls token, no absolute positions), not a timm checkpoint.

Both files are written by rename, the weights first; ``config.json`` records the weights'
sha256, so a crash between the two renames (a new weights file beside an old config) is
refused at load instead of giving another network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from jepactl.errors import CheckpointError, ConfigError
from jepactl.models.vit import VideoViT
from jepactl.utils import atomic_write_bytes, atomic_write_text, file_sha256, suggestion

#: What ``jepactl export --format`` writes (the name of a file format of the weights).
FORMATS: tuple[str, ...] = ("safetensors",)
FORMAT = "jepactl-encoder"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

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


def save_exported(
    encoder: VideoViT, vit: Mapping[str, Any], out: Path, info: Mapping[str, Any]
) -> Path:
    """Write ``encoder`` (built with the arguments ``vit``) to ``out``: the weights as
    safetensors, then ``config.json`` with ``vit``, the size name and ``info`` (version, run,
    step, input convention...). Returns the config's path."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in encoder.state_dict().items()}
    data = save(tensors, metadata={"format": "pt"})
    atomic_write_bytes(out / WEIGHTS_FILE, lambda f: f.write(data), len(data))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": type(encoder).__name__,
        "model_name": timm_name(vit),
        "patch_size": vit["patch_size"],
        "tubelet": vit["tubelet"],
        "out_dim": encoder.out_dim,
        "vit": dict(vit),
        **info,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write_text(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return out / CONFIG_FILE


def read_export_config(folder: Path) -> dict[str, Any]:
    """The ``config.json`` of an export folder, checked to be one."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{folder} holds no {CONFIG_FILE}; make one with `jepactl export RUN`")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a jepactl encoder export (no format: {FORMAT})")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigError(
            f"{path} is format version {config['format_version']}, newer than this jepactl "
            f"reads ({FORMAT_VERSION}); upgrade jepactl"
        )
    return config


def load_exported(folder: Path | str, device: torch.device | str = "cpu") -> VideoViT:
    """The encoder of an export folder, in eval mode: ``VideoViT(**config["vit"])`` with the
    safetensors weights (every key must match). Input: float ``[B, 3, T, H, W]``,
    normalised as ``config.json``'s ``input`` says."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_export_config(folder)
    weights = folder / str(config.get("weights_file", WEIGHTS_FILE))
    if not weights.is_file():
        raise ConfigError(f"{folder} holds no {weights.name}; rerun `jepactl export`")
    if file_sha256(weights) != config.get("weights_sha256"):
        raise CheckpointError(
            f"{weights} is not the file {CONFIG_FILE} describes (an interrupted export?); "
            "rerun `jepactl export`"
        )
    encoder = VideoViT(**config["vit"])
    encoder.load_state_dict(load_file(weights, device="cpu"))
    return encoder.eval().to(device)

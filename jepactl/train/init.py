"""``pretrain --init-from FILE``: the student (and the EMA teacher) start from a checkpoint's
encoder instead of a random one.

The file may be in any layout :mod:`jepactl.models.upstream` reads (V-JEPA, V-JEPA 2, the
paper's V-JEPA 2.1 code, a jepactl run). Its sizes (width, depth, heads, MLP, patch, tubelet)
must be the recipe's model: a mismatch is a one-line error naming the preset that fits. What
the weights need beyond sizes to compute what they were trained to compute (position scheme,
key bias) is written into the recipe as ``model.*`` keys by :func:`init_overrides`, so
``config.yaml`` records it and a resume rebuilds the same encoder. Output levels (V-JEPA 2.1's
per-level norms, our ``model.deep_supervision``) belong to the objective, so they are checked,
not changed.
``model.init_from`` records the file; the weights are loaded only when a run starts (a resume
continues from its own checkpoint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from jepactl.config import ModelConfig
from jepactl.errors import ConfigError
from jepactl.models import ENCODER_PRESETS, deep_supervision_blocks
from jepactl.models.upstream import LoadedEncoder, load_encoder
from jepactl.models.vit import VideoViT


@dataclass(frozen=True)
class Arch:
    """An encoder's sizes, and the options its weights need (``VideoViT`` arguments)."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    patch_size: int
    tubelet: int
    positions: str
    pos_grid: tuple[int, ...]
    rope_grid: int
    k_bias: bool
    out_blocks: tuple[int, ...]

    def sizes(self) -> str:
        return (
            f"{self.embed_dim}x{self.depth}, {self.num_heads} heads, MLP {self.mlp_hidden}, "
            f"patch {self.patch_size}, tubelet {self.tubelet}"
        )


def encoder_arch(encoder: VideoViT) -> Arch:
    """What a built encoder is."""
    block = encoder.blocks[0]
    fc1 = block.get_submodule("mlp.fc1")
    assert isinstance(fc1, nn.Linear)
    return Arch(
        embed_dim=encoder.embed_dim, depth=len(encoder.blocks), num_heads=encoder.num_heads,
        mlp_hidden=fc1.out_features, patch_size=encoder.patch_size, tubelet=encoder.tubelet,
        positions=encoder.positions, pos_grid=encoder.pos_grid or (),
        rope_grid=encoder.rope_grid or 0,
        k_bias=isinstance(block.get_submodule("attn").k_bias, nn.Parameter),
        out_blocks=encoder.out_blocks,
    )  # fmt: skip


def config_arch(cfg: ModelConfig) -> Arch:
    """What ``build_encoder(cfg)`` would build, without building it."""
    preset = ENCODER_PRESETS[cfg.preset]
    return Arch(
        embed_dim=preset.embed_dim, depth=preset.depth, num_heads=preset.num_heads,
        mlp_hidden=int(preset.embed_dim * preset.mlp_ratio), patch_size=cfg.patch_size,
        tubelet=cfg.tubelet, positions=cfg.positions, pos_grid=tuple(cfg.pos_grid),
        rope_grid=cfg.rope_grid, k_bias=cfg.k_bias,
        out_blocks=deep_supervision_blocks(cfg) or (preset.depth,),
    )  # fmt: skip


def read_init(path: Path) -> LoadedEncoder:
    """The encoder of ``path`` (default weights: the EMA teacher where the file has one)."""
    return load_encoder(Path(path))


def init_overrides(loaded: LoadedEncoder, path: Path) -> list[str]:
    """``--set`` overrides that give the recipe's model what ``loaded``'s weights need (all
    but the sizes, which must already match) and record the file in ``model.init_from``."""
    arch = encoder_arch(loaded.encoder)
    grid = json.dumps(list(arch.pos_grid)).replace(" ", "")
    return [
        f"model.init_from={json.dumps(str(Path(path).resolve()))}",
        f"model.positions={arch.positions}",
        f"model.pos_grid={grid}",
        f"model.rope_grid={arch.rope_grid}",
        f"model.k_bias={str(arch.k_bias).lower()}",
    ]


def check_init(cfg: ModelConfig, loaded: LoadedEncoder) -> None:
    """A one-line :class:`ConfigError` unless ``cfg`` builds the encoder ``loaded`` is."""
    theirs, ours = encoder_arch(loaded.encoder), config_arch(cfg)
    where = f"--init-from {cfg.init_from or 'FILE'}"
    if (theirs.embed_dim, theirs.depth, theirs.num_heads, theirs.mlp_hidden) != (
        ours.embed_dim,
        ours.depth,
        ours.num_heads,
        ours.mlp_hidden,
    ):
        fits = [
            name
            for name, p in ENCODER_PRESETS.items()
            if (p.embed_dim, p.depth, p.num_heads, int(p.embed_dim * p.mlp_ratio))
            == (theirs.embed_dim, theirs.depth, theirs.num_heads, theirs.mlp_hidden)
        ]
        hint = f"--set model.preset={fits[0]}" if fits else "no preset has that size (see models)"
        raise ConfigError(
            f"{where}: its encoder is ViT {theirs.sizes()}, the recipe's model "
            f"(preset {cfg.preset}) is ViT {ours.sizes()}; {hint}"
        )
    for name in ("patch_size", "tubelet"):
        if getattr(theirs, name) != getattr(ours, name):
            key = "patch_size" if name == "patch_size" else "tubelet"
            raise ConfigError(
                f"{where}: its encoder has {name} {getattr(theirs, name)}, the recipe's "
                f"{getattr(ours, name)}; --set model.{key}={getattr(theirs, name)}"
            )
    for name in ("positions", "pos_grid", "rope_grid", "k_bias", "out_blocks"):
        if getattr(theirs, name) != getattr(ours, name):
            raise ConfigError(
                f"{where}: its encoder has {name} {getattr(theirs, name)}, the recipe's model "
                f"{getattr(ours, name)}; pass the file with --init-from, which sets model.{name}"
                if name != "out_blocks"
                else f"{where}: its encoder has output blocks {list(theirs.out_blocks)}, the "
                f"recipe's model {list(ours.out_blocks)} (model.deep_supervision)"
            )


def initialise(student: VideoViT, teacher: VideoViT | None, loaded: LoadedEncoder) -> None:
    """Copy ``loaded``'s weights into the student and the teacher (a one-line error naming the
    first weight that does not fit)."""
    state = loaded.encoder.state_dict()
    expected = student.state_dict()
    for key, value in expected.items():
        if key not in state or state[key].shape != value.shape:
            got = tuple(state[key].shape) if key in state else "nothing"
            raise ConfigError(
                f"--init-from: the file's encoder has {got} for '{key}', the recipe's model "
                f"needs {tuple(value.shape)}"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise ConfigError(f"--init-from: the file's '{extra[0]}' has no place in the model")
    with torch.no_grad():
        student.load_state_dict(state)
        if teacher is not None:
            teacher.load_state_dict(state)

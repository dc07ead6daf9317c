"""Encoders from public V-JEPA checkpoints (and jepactl's own), loaded onto :class:`VideoViT`.

One entry point, :func:`load_encoder`, reads a checkpoint file, tells its layout from the key
names, takes the chosen encoder (``target_encoder``, the EMA teacher, by default), infers the
architecture from the tensor shapes, and maps every weight onto a :class:`VideoViT` built with
the options that reproduce that code's forward pass (``docs/checkpoints.md``):

============  ======================================================  =======================
layout        recognised by (after ``module.`` / ``backbone.``)        positions
============  ======================================================  =======================
``jepa``      ``pos_embed`` (V-JEPA 1, ``facebookresearch/jepa``)      frozen 3D sin-cos table
``vjepa2``    final ``norm``, no ``pos_embed`` (``facebookresearch/    RoPE, V-JEPA 2's
              vjepa2``)                                                 ``.repeat`` layout
``vjepa2.1``  ``norms_block.*`` (V-JEPA 2.1, the paper's code)         RoPE (interleaved, ours),
                                                                        ``interpolate_rope``
``jepactl``   ``config`` + ``student`` (a jepactl run)                 as its recipe says
============  ======================================================  =======================

Every source key must land somewhere and every weight of the encoder must come from the file:
anything else is a one-line :class:`~jepactl.errors.CheckpointError` naming the first key left
over and the layout detected (the reference evaluation loads with ``strict=False``, so a
mismatch there passes silently). The only keys deliberately not loaded are V-JEPA 2.1's image
tokeniser (``patch_embed_img.*``, ``img_mod_embed``), which the paper's runs never used
(images enter as static 16-frame videos); they are listed in :attr:`LoadedEncoder.ignored`.
V-JEPA 2.1's ``video_mod_embed`` is added to every video patch token, so it is folded into the
patch embedding's bias (exact for videos; our one-frame image path then uses it too).

Heads are not in the shapes: they come from the size table of ``vjepa-reference.md`` §1
(by embedding width and layout), or from ``num_heads``.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jepactl.checkpoint import RunCheckpoint, select_weights, why_unreadable
from jepactl.checkpoint import load as load_checkpoint
from jepactl.config import Recipe
from jepactl.errors import CheckpointError, ConfigError
from jepactl.models.vit import Positions, VideoViT
from jepactl.utils import suggestion

#: Layouts :func:`load_encoder` recognises, with the code that saves them.
LAYOUTS: dict[str, str] = {
    "jepa": "V-JEPA (facebookresearch/jepa, sin-cos positions)",
    "vjepa2": "V-JEPA 2 (facebookresearch/vjepa2, RoPE)",
    "vjepa2.1": "V-JEPA 2.1 (the paper's code, RoPE, per-level norms)",
    "jepactl": "a jepactl run checkpoint",
    "state_dict": "a bare encoder state dict",
}

#: Which encoder to load: ``auto`` is the EMA teacher (``target_encoder``) where the file has
#: one; ``student``/``teacher`` are jepactl's names for ``encoder``/``target_encoder``.
WEIGHTS: tuple[str, ...] = ("auto", "encoder", "target_encoder", "student", "teacher")
_UPSTREAM_NAME = {"student": "encoder", "teacher": "target_encoder"}
_JEPACTL_NAME = {"encoder": "student", "target_encoder": "teacher"}

#: Heads by embedding width (``vjepa-reference.md`` §1); the V-JEPA 2 family's giant models
#: are the ``*_xformers`` ones (head width 64).
HEADS: dict[int, int] = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
HEADS_VJEPA2: dict[int, int] = {**HEADS, 1408: 22, 1664: 26}

#: V-JEPA 2.1's output levels (0-indexed ``hierarchical_layers``) by depth, as 1-indexed blocks.
LEVEL_BLOCKS: dict[int, tuple[int, ...]] = {
    12: (3, 6, 9, 12),
    24: (6, 12, 18, 24),
    40: (10, 20, 30, 40),
    48: (12, 24, 38, 48),
}
#: V-JEPA 2.1's ``interpolate_rope`` grid by patch size (256 px at 16, 252 px at 14).
ROPE_GRID: dict[int, int] = {16: 16, 14: 18}

_PREFIXES = ("module.", "backbone.", "_orig_mod.")
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_SAME_IN_BLOCK = frozenset(
    f"{layer}.{p}"
    for layer in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2")
    for p in ("weight", "bias")
) | {"attn.qkv.weight"}
_IGNORED_21 = re.compile(r"(patch_embed_img\..+|img_mod_embed)")


@dataclass(frozen=True)
class EncoderSpec:
    """What a checkpoint's weights need of :class:`VideoViT` (its constructor arguments)."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    patch_size: int
    tubelet: int
    in_chans: int = 3
    positions: Positions = "rope"
    pos_grid: tuple[int, int, int] | None = None
    rope_grid: int | None = None
    k_bias: bool = False
    out_blocks: tuple[int, ...] | None = None

    def build(self) -> VideoViT:
        return VideoViT(
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio, patch_size=self.patch_size, tubelet=self.tubelet,
            in_chans=self.in_chans, out_blocks=self.out_blocks, positions=self.positions,
            pos_grid=self.pos_grid, rope_grid=self.rope_grid, k_bias=self.k_bias,
        )  # fmt: skip

    def describe(self) -> str:
        """One line: ``ViT 1024x24, 16 heads, patch 16, tubelet 2, sincos 8x14x14``."""
        pos: str = self.positions
        if self.pos_grid:
            pos += " " + "x".join(map(str, self.pos_grid))
        if self.rope_grid:
            pos += f" (rows/columns on a {self.rope_grid}-cell grid)"
        levels = f", {len(self.out_blocks)} output levels" if self.out_blocks else ""
        return (
            f"ViT {self.embed_dim}x{self.depth}, {self.num_heads} heads, patch "
            f"{self.patch_size}, tubelet {self.tubelet}, {pos}{levels}"
        )


@dataclass
class LoadedEncoder:
    """An encoder loaded by :func:`load_encoder`, and where its weights came from."""

    encoder: VideoViT
    layout: str
    weights: str  # the entry of the file that was loaded (``target_encoder``, ``student``, …)
    spec: EncoderSpec | None  # None for a jepactl run (its recipe says it all)
    state: Mapping[str, Any]  # the whole file, for the caller's metadata (step, …)
    ignored: tuple[str, ...] = field(default_factory=tuple)
    recipe: Recipe | None = None  # a jepactl run's recipe (parsed from the file)
    trained: tuple[str, ...] = ()  # a jepactl run's encoders that trained
    step: int = -1  # a jepactl run's training step (-1: an upstream file, which does not say)

    def describe(self) -> str:
        arch = f"; {self.spec.describe()}" if self.spec else ""
        return f"{LAYOUTS[self.layout]}, {self.weights}{arch}"


def read_file(path: Path) -> dict[str, Any]:
    """``torch.load`` (``weights_only``, memory-mapped where the format allows); a missing,
    unreadable or foreign file is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        state = load_checkpoint(path, mmap=zipfile.is_zipfile(path))  # weights_only
    except PermissionError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    except Exception as exc:
        raise CheckpointError(f"{path} cannot be loaded ({why_unreadable(path, exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def load_encoder(
    path: Path,
    weights: str = "auto",
    num_heads: int | None = None,
    rope_grid: int | None = None,
    out_blocks: tuple[int, ...] | None = None,
) -> LoadedEncoder:
    """Load the encoder of the checkpoint file ``path`` (any layout of :data:`LAYOUTS`), in
    eval mode on the CPU.

    ``weights``: one of :data:`WEIGHTS`. ``num_heads`` overrides the size table; ``rope_grid``
    overrides V-JEPA 2.1's ``interpolate_rope`` grid (0 turns it off); ``out_blocks``
    overrides V-JEPA 2.1's output levels (1-indexed blocks).
    """
    if weights not in WEIGHTS:
        raise ConfigError(f"unknown weights '{weights}'{suggestion(weights, WEIGHTS)}")
    state = read_file(path)
    if RunCheckpoint.is_one(state):
        return _load_jepactl(path, state, weights)
    entry, sd = _pick_encoder(path, state, weights)
    sd = strip_prefixes(sd)
    layout = detect_layout(sd)
    spec = infer_spec(sd, layout, num_heads, rope_grid, out_blocks)
    converted, ignored = convert_state_dict(sd, layout)
    encoder = spec.build()
    _check_keys(encoder, converted, layout)
    encoder.load_state_dict(converted)
    encoder.eval()
    return LoadedEncoder(encoder, layout, entry, spec, state, ignored)


def _pick_encoder(
    path: Path, state: Mapping[str, Any], weights: str
) -> tuple[str, Mapping[str, torch.Tensor]]:
    """The entry of an upstream checkpoint to load, and its state dict."""
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        if weights not in ("auto",):
            raise ConfigError(
                f"{path} is a bare state dict with one encoder; --weights {weights} does not "
                "apply (use auto)"
            )
        return "state_dict", state
    name = _UPSTREAM_NAME.get(weights, weights)
    if name == "auto":
        name = "target_encoder" if "target_encoder" in state else "encoder"
    sd = state.get(name)
    if not isinstance(sd, Mapping):
        have = [k for k in ("encoder", "target_encoder") if isinstance(state.get(k), Mapping)]
        found = f"it holds {', '.join(have)}" if have else f"its keys: {', '.join(list(state)[:8])}"
        raise CheckpointError(f"{path} has no '{name}' encoder ({found})")
    return name, sd


def strip_prefixes(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the wrappers' leading ``module.`` (DDP), ``backbone.`` (V-JEPA 2's
    ``MultiSeqWrapper``) and ``_orig_mod.`` (``torch.compile``), in any order and number."""
    out = {}
    for key, value in sd.items():
        stripped = key
        while stripped.startswith(_PREFIXES):
            stripped = stripped.split(".", 1)[1]
        if stripped in out:
            raise CheckpointError(f"two keys become '{stripped}' without their prefixes")
        out[stripped] = value
    return out


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """``vjepa2.1`` (per-level ``norms_block``), ``jepa`` (a ``pos_embed`` table) or
    ``vjepa2`` (neither: RoPE), from keys already stripped of their prefixes."""
    if any(k.startswith("norms_block.") for k in sd):
        return "vjepa2.1"
    if "pos_embed" in sd:
        return "jepa"
    return "vjepa2"


def _tensor(sd: Mapping[str, torch.Tensor], key: str, layout: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"no '{key}' in the encoder (layout {layout}): not a ViT encoder")
    return sd[key]


def infer_spec(
    sd: Mapping[str, torch.Tensor],
    layout: str,
    num_heads: int | None = None,
    rope_grid: int | None = None,
    out_blocks: tuple[int, ...] | None = None,
) -> EncoderSpec:
    """The architecture from the shapes (heads from :data:`HEADS` unless ``num_heads``)."""
    pe = _tensor(sd, "patch_embed.proj.weight", layout)
    if pe.ndim not in (4, 5) or pe.shape[-1] != pe.shape[-2]:
        raise CheckpointError(
            f"patch_embed.proj.weight has shape {tuple(pe.shape)} (layout {layout}): expected "
            "a square Conv3d (or Conv2d) kernel"
        )
    dim, in_chans, patch = int(pe.shape[0]), int(pe.shape[1]), int(pe.shape[-1])
    tubelet = int(pe.shape[2]) if pe.ndim == 5 else 1
    blocks = sorted({int(m.group(1)) for k in sd if (m := _BLOCK.fullmatch(k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointError(f"the encoder's blocks are not numbered 0..N-1 (layout {layout})")
    depth = len(blocks)
    hidden = int(_tensor(sd, "blocks.0.mlp.fc1.weight", layout).shape[0])
    table = HEADS_VJEPA2 if layout in ("vjepa2", "vjepa2.1") else HEADS
    heads = num_heads or table.get(dim)
    if heads is None:
        raise CheckpointError(
            f"embedding width {dim} is not in the V-JEPA size table (layout {layout}); pass "
            "the number of heads (num_heads)"
        )
    if dim % heads:
        raise CheckpointError(f"embedding width {dim} is not divisible by {heads} heads")
    positions: Positions = "sincos" if layout == "jepa" else "rope"
    pos_grid = None
    if layout == "jepa":
        pos_grid = table_grid(sd["pos_embed"])
    if layout == "vjepa2":
        positions = "rope-vjepa2"
    grid: int | None = None
    levels: tuple[int, ...] | None = None
    if layout == "vjepa2.1":
        grid = ROPE_GRID.get(patch) if rope_grid is None else (rope_grid or None)
        levels = out_blocks or _levels(sd, depth)
    elif rope_grid:
        raise ConfigError(f"rope_grid applies to V-JEPA 2.1 checkpoints, not {layout}")
    if positions != "sincos" and (dim // heads) // 3 // 2 == 0:
        raise CheckpointError(f"head width {dim // heads} is too small for 3D RoPE")
    return EncoderSpec(
        embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=hidden / dim,
        patch_size=patch, tubelet=tubelet, in_chans=in_chans, positions=positions,
        pos_grid=pos_grid, rope_grid=grid, k_bias="blocks.0.attn.qkv.bias" in sd,
        out_blocks=levels,
    )  # fmt: skip


def _levels(sd: Mapping[str, torch.Tensor], depth: int) -> tuple[int, ...]:
    """V-JEPA 2.1's output blocks: its table by depth, else every quarter (one level: last)."""
    n = len({k.split(".")[1] for k in sd if k.startswith("norms_block.")})
    if n == 1:
        return (depth,)
    if n == 4 and depth in LEVEL_BLOCKS:
        return LEVEL_BLOCKS[depth]
    if n == 4 and depth % 4 == 0:
        return tuple(depth * q // 4 for q in range(1, 5))
    raise CheckpointError(
        f"{n} norms_block levels over {depth} blocks (layout vjepa2.1): which blocks they "
        "follow is unknown; pass out_blocks"
    )


def table_grid(pos_embed: torch.Tensor) -> tuple[int, int, int]:
    """The ``(t, h, w)`` grid of a V-JEPA 1 sin-cos table ``[1, N, D]``, read from its values:
    channel 0 is ``sin(t)``, so it first changes after one frame of ``h·w`` tokens (square, as
    that code assumes)."""
    table = pos_embed.reshape(-1, pos_embed.shape[-1]).float()
    n = table.shape[0]
    changed = (table[:, 0] != table[0, 0]).nonzero()
    hw = int(changed[0, 0]) if len(changed) else n
    side = math.isqrt(hw)
    if side * side != hw or n % hw:
        raise CheckpointError(
            f"pos_embed of {n} tokens does not look like a square sin-cos table (layout jepa)"
        )
    return (n // hw, side, side)


def convert_state_dict(
    sd: Mapping[str, torch.Tensor], layout: str
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Upstream names (prefixes stripped) -> :class:`VideoViT` names; the keys deliberately
    not loaded. A key with no place raises a :class:`CheckpointError` naming it."""
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in sd.items():
        if m := _BLOCK.fullmatch(key):
            i, rest = m.groups()
            if rest in _SAME_IN_BLOCK:
                out[key] = value
                continue
            if rest == "attn.qkv.bias":
                q, k, v = value.chunk(3)
                out.update({f"blocks.{i}.attn.q_bias": q, f"blocks.{i}.attn.k_bias": k})
                out[f"blocks.{i}.attn.v_bias"] = v
                continue
        elif key in ("patch_embed.proj.weight", "patch_embed.proj.bias"):
            name = key.replace(".proj", "")
            out[name] = value.unsqueeze(2) if value.ndim == 4 else value
            continue
        elif layout != "vjepa2.1" and key in ("norm.weight", "norm.bias"):
            out[key.replace("norm.", "norms.0.")] = value
            continue
        elif layout == "vjepa2.1" and key.startswith("norms_block."):
            out[key.replace("norms_block.", "norms.")] = value
            continue
        elif layout == "jepa" and key == "pos_embed":
            out[key] = value.reshape(1, -1, value.shape[-1])
            continue
        elif layout == "vjepa2.1" and key == "video_mod_embed":
            continue  # folded into the patch bias below
        elif layout == "vjepa2.1" and _IGNORED_21.fullmatch(key):
            ignored.append(key)
            continue
        raise CheckpointError(
            f"checkpoint key '{key}' (layout {layout}) has no place in jepactl's encoder"
        )
    if layout == "vjepa2.1" and "video_mod_embed" in sd and "patch_embed.bias" in out:
        out["patch_embed.bias"] = out["patch_embed.bias"] + sd["video_mod_embed"].reshape(-1)
    return out, tuple(ignored)


def _check_keys(encoder: VideoViT, converted: Mapping[str, torch.Tensor], layout: str) -> None:
    """Every weight of ``encoder`` comes from ``converted`` with its shape, and nothing else."""
    expected = encoder.state_dict()
    for key, value in converted.items():
        if key not in expected:
            raise CheckpointError(
                f"checkpoint weight '{key}' (layout {layout}) has no place in jepactl's encoder"
            )
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"checkpoint weight '{key}' (layout {layout}) has shape {tuple(value.shape)}, "
                f"the encoder needs {tuple(expected[key].shape)}"
            )
    for key in expected:
        if key not in converted:
            raise CheckpointError(
                f"the checkpoint (layout {layout}) has no weights for the encoder's '{key}'"
            )


def _load_jepactl(path: Path, state: Mapping[str, Any], weights: str) -> LoadedEncoder:
    """A jepactl run checkpoint: the encoder its recipe describes, ``auto`` = the EMA teacher
    where it trained (``trained_encoders``), else the student."""
    from jepactl.models import build_encoder

    try:
        record = RunCheckpoint.from_state(state, path)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    recipe = record.recipe()
    trained = record.trained_encoders(recipe)
    name = select_weights(_JEPACTL_NAME.get(weights, weights), trained, where=str(path))
    sd = record.weights(name)
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path} holds no {name} weights")
    encoder = build_encoder(recipe.model)
    _check_keys(encoder, sd, "jepactl")
    encoder.load_state_dict(sd)
    encoder.eval()
    return LoadedEncoder(encoder, "jepactl", name, None, state, recipe=recipe,
                         trained=tuple(trained), step=record.step)  # fmt: skip

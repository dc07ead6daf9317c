"""Model registry: encoder presets and builders from a recipe's ``model`` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jepactl.config import ModelConfig
from jepactl.models.export import load_exported, save_exported, timm_name
from jepactl.models.predictor import Predictor
from jepactl.models.rope import RotaryEmbedding3D
from jepactl.models.vit import VideoViT


@dataclass(frozen=True)
class EncoderPreset:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


# V-JEPA sizes (tiny..large) plus CPU-sized ones for the synthetic recipes and tests.
ENCODER_PRESETS: dict[str, EncoderPreset] = {
    "micro": EncoderPreset(64, 2, 2, 2.0),
    "cpu": EncoderPreset(192, 6, 3),
    "tiny": EncoderPreset(192, 12, 3),
    "small": EncoderPreset(384, 12, 6),
    "base": EncoderPreset(768, 12, 12),
    "large": EncoderPreset(1024, 24, 16),
    "huge": EncoderPreset(1280, 32, 16),
    "giant": EncoderPreset(1408, 40, 22, 48 / 11),  # V-JEPA 2's ViT-g (vit_giant_xformers)
}


def deep_supervision_blocks(cfg: ModelConfig) -> tuple[int, ...] | None:
    """Blocks whose outputs are concatenated: by default every quarter of the depth."""
    if not cfg.deep_supervision:
        return None
    if cfg.deep_supervision_blocks:
        return tuple(cfg.deep_supervision_blocks)
    depth = ENCODER_PRESETS[cfg.preset].depth
    return tuple(depth * q // 4 for q in range(1, 5)) if depth >= 4 else (depth,)


def check_model_config(cfg: ModelConfig) -> None:
    """Size checks that would otherwise fail deep inside the model build."""
    preset = ENCODER_PRESETS[cfg.preset]
    for what, dim, heads in (
        ("encoder", preset.embed_dim, preset.num_heads),
        ("predictor", cfg.pred_dim, cfg.pred_heads),
    ):
        if heads < 1 or dim % heads:
            raise ValueError(f"{what} width {dim} is not divisible by {heads} heads")
        if dim // heads < 6:
            raise ValueError(f"{what} head width {dim // heads} is too small for 3D RoPE (>= 6)")
    if cfg.pred_depth < 1 or cfg.pred_mask_tokens < 1:
        raise ValueError("pred_depth and pred_mask_tokens must be >= 1")
    if cfg.patch_size < 1 or cfg.tubelet < 1:
        raise ValueError(
            f"patch_size and tubelet must be >= 1, got {cfg.patch_size}, {cfg.tubelet}"
        )
    if cfg.rope_theta <= 0:
        raise ValueError(f"rope_theta must be > 0, got {cfg.rope_theta}")
    if not 0 <= cfg.drop_path < 1:
        raise ValueError(f"drop_path must be in [0, 1), got {cfg.drop_path}")
    if cfg.deep_supervision_blocks and not cfg.deep_supervision:
        raise ValueError("deep_supervision_blocks is set but deep_supervision is false")
    if (cfg.positions == "sincos") != bool(cfg.pos_grid):
        raise ValueError(
            "model.pos_grid [t, h, w] is set with model.positions=sincos, and only then"
        )
    if cfg.pos_grid and (len(cfg.pos_grid) != 3 or min(cfg.pos_grid) < 1):
        raise ValueError(f"model.pos_grid must be 3 positive sizes [t, h, w], got {cfg.pos_grid}")
    if cfg.rope_grid and (cfg.positions == "sincos" or cfg.rope_grid < 2):
        raise ValueError(f"model.rope_grid {cfg.rope_grid} needs rotary positions and >= 2 cells")
    blocks = deep_supervision_blocks(cfg)
    if blocks and (blocks[-1] != preset.depth or list(blocks) != sorted(set(blocks))):
        raise ValueError(
            f"deep_supervision_blocks {list(blocks)} must increase and end with the last "
            f"block ({preset.depth})"
        )


def encoder_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """The :class:`VideoViT` constructor arguments of a recipe's ``model`` section (plain
    values: an export's ``config.json`` records them and rebuilds the encoder from them)."""
    preset = ENCODER_PRESETS[cfg.preset]
    blocks = deep_supervision_blocks(cfg)
    return {
        "embed_dim": preset.embed_dim,
        "depth": preset.depth,
        "num_heads": preset.num_heads,
        "mlp_ratio": preset.mlp_ratio,
        "patch_size": cfg.patch_size,
        "tubelet": cfg.tubelet,
        "rope_theta": cfg.rope_theta,
        "drop_path": cfg.drop_path,
        "out_blocks": list(blocks) if blocks else None,
        "positions": cfg.positions,
        "pos_grid": list(cfg.pos_grid) if cfg.pos_grid else None,
        "rope_grid": cfg.rope_grid or None,
        "k_bias": cfg.k_bias,
    }


def build_encoder(cfg: ModelConfig) -> VideoViT:
    return VideoViT(**encoder_kwargs(cfg))


def build_predictor(cfg: ModelConfig, in_dim: int, predict_context: bool) -> Predictor:
    return Predictor(
        in_dim=in_dim,
        dim=cfg.pred_dim,
        depth=cfg.pred_depth,
        num_heads=cfg.pred_heads,
        embed=cfg.pred_embed,
        num_mask_tokens=cfg.pred_mask_tokens,
        predict_context=predict_context,
        rope_theta=cfg.rope_theta,
    )


__all__ = [
    "ENCODER_PRESETS",
    "EncoderPreset",
    "Predictor",
    "RotaryEmbedding3D",
    "VideoViT",
    "build_encoder",
    "build_predictor",
    "check_model_config",
    "deep_supervision_blocks",
    "encoder_kwargs",
    "load_exported",
    "save_exported",
    "timm_name",
]

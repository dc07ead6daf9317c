"""Encoder sizes and the checks of a recipe's ``model`` section, without torch: what recipe
validation needs (``jepactl.recipe``, ``study run``'s check of every recipe) without loading
the model code (timm, torchvision). :mod:`jepactl.models` re-exports all of it."""

from __future__ import annotations

from dataclasses import dataclass

from jepactl.config import ModelConfig


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

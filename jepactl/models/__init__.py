"""Model registry: encoder presets and builders from a recipe's ``model`` section."""

from __future__ import annotations

from typing import Any

from jepactl.config import ModelConfig
from jepactl.models.export import load_exported, save_exported, timm_name
from jepactl.models.predictor import Predictor
from jepactl.models.rope import RotaryEmbedding3D
from jepactl.models.vit import VideoViT
from jepactl.presets import (
    ENCODER_PRESETS,
    EncoderPreset,
    check_model_config,
    deep_supervision_blocks,
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

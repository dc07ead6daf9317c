"""The frozen encoder of a run: rebuilt from its checkpoint, and clips encoded with it.

``auto`` weights are the EMA teacher when the run trained one, else the student; the teacher
of a run that trained none is refused (the reference scored its no-EMA runs on a teacher that
was a never-trained copy of the initial student). The checkpoint's sha256 is of exactly the
bytes loaded, and goes into every cache built from it.

An encoder can also come from a checkpoint file (``checkpoint=``, the CLI's ``--checkpoint
FILE``) in any layout :mod:`jepactl.models.upstream` reads: V-JEPA, V-JEPA 2, the paper's
V-JEPA 2.1 code, or a jepactl run's own. The run directory then only holds what is computed
from it (caches, probe results). ``student``/``teacher`` mean the file's ``encoder`` /
``target_encoder``; ``auto`` is ``target_encoder`` (their evaluation's choice; see
``docs/checkpoints.md`` for the runs where that encoder never trained).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from jepactl import checkpoint as ckpt
from jepactl.checkpoint import WEIGHTS, RunCheckpoint, select_weights
from jepactl.config import Recipe, autocast_bf16
from jepactl.data.loader import IMAGENET_MEAN, IMAGENET_STD, to_model_input
from jepactl.errors import CheckpointError, ConfigError
from jepactl.features.pixels import PixelEncoder
from jepactl.grid import TokenGrid, pool_tokens
from jepactl.models import build_encoder, encoder_kwargs
from jepactl.models.export import ExportInput, ExportSource, check_format, save_exported
from jepactl.models.upstream import load_encoder
from jepactl.models.vit import VideoViT
from jepactl.rundir import RunDir
from jepactl.utils import file_sha256, suggestion
from jepactl.version import __version__


@dataclass
class FrozenEncoder:
    """An encoder rebuilt from a run's checkpoint, in eval mode with gradients off."""

    encoder: VideoViT
    weights: str  # student or teacher (a bare state dict from another codebase: state_dict)
    checkpoint: Path
    step: int  # 0 for a file from another codebase (they count epochs, not steps)
    sha256: str
    recipe: Recipe | None  # None for a file from another codebase
    trained_encoders: list[str]
    source: str = "jepactl"  # the checkpoint's layout (jepactl.models.upstream.LAYOUTS)


def load_frozen_encoder(
    run_dir: Path,
    weights: str = "auto",
    device: torch.device | str = "cpu",
    attempts: int = 3,
    checkpoint: Path | None = None,
) -> FrozenEncoder:
    """Rebuild ``RUN/checkpoints/latest.pt``'s encoder (``weights_only`` load) with the chosen
    weights, or the encoder of the file ``checkpoint`` (any layout of
    :mod:`jepactl.models.upstream`). The sha256 is of exactly the bytes loaded: a checkpoint
    replaced by a training run in the meantime (atomic rename: a new inode) is noticed and the
    load retried."""
    if checkpoint is not None:
        return _load_file(Path(checkpoint), weights, device)
    path = RunDir(run_dir).latest
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no checkpoint ({path}); train it with `jepactl pretrain`")
    for _ in range(attempts):
        before = os.stat(path)
        sha = file_sha256(path)
        try:
            state = ckpt.load(path, mmap=True)
        except PermissionError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"{path} cannot be loaded ({ckpt.why_unreadable(path, exc)}); `jepactl pretrain` "
                "on the run falls back to its newest readable snapshot"
            ) from None
        after = os.stat(path)
        same = (before.st_ino, before.st_size, before.st_mtime_ns) == (
            after.st_ino,
            after.st_size,
            after.st_mtime_ns,
        )
        if same:
            break
    else:
        raise ConfigError(f"{path} kept changing while it was read; try again")
    try:
        record = RunCheckpoint.from_state(state, path)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    recipe = record.recipe()
    trained = record.trained_encoders(recipe)
    chosen = select_weights(weights, trained, where=str(run_dir))
    if chosen == "init":  # the student as pretrain built it: the same seed, built first
        torch.manual_seed(recipe.train.seed)
        encoder = build_encoder(recipe.model)
    else:
        weights_state = record.weights(chosen)
        if weights_state is None:
            raise ConfigError(f"{path} holds no {chosen} weights")
        encoder = build_encoder(recipe.model)
        encoder.load_state_dict(weights_state)
    encoder.requires_grad_(False).eval().to(device)
    return FrozenEncoder(
        encoder=encoder,
        weights=chosen,
        checkpoint=path.resolve(),
        step=record.step,
        sha256=sha,
        recipe=recipe,
        trained_encoders=trained,
    )


def _load_file(path: Path, weights: str, device: torch.device | str) -> FrozenEncoder:
    """A checkpoint file of any layout (:func:`jepactl.models.upstream.load_encoder`)."""
    if weights not in WEIGHTS:
        raise ConfigError(f"unknown weights '{weights}'{suggestion(weights, WEIGHTS)}")
    if weights == "init":
        raise ConfigError(
            "--weights init rebuilds a run's initialisation: give the run, not --checkpoint"
        )
    if weights == "reference":  # the reference always evaluated the file's target encoder
        weights = "teacher"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    sha = file_sha256(path)
    loaded = load_encoder(path, weights)
    if file_sha256(path) != sha:
        raise ConfigError(f"{path} changed while it was read; try again")
    encoder = loaded.encoder.requires_grad_(False).eval().to(device)
    state = loaded.state
    if loaded.recipe is not None:  # a jepactl run's checkpoint
        return FrozenEncoder(
            encoder, loaded.weights, path.resolve(), loaded.step, sha, loaded.recipe,
            list(loaded.trained),
        )  # fmt: skip
    # upstream files do not say which encoders trained: both are listed as they are present
    names = {"encoder": "student", "target_encoder": "teacher"}
    present = [names[k] for k in names if isinstance(state.get(k), Mapping)]
    return FrozenEncoder(
        encoder=encoder,
        weights=names.get(loaded.weights, loaded.weights),
        checkpoint=path.resolve(),
        step=0,
        sha256=sha,
        recipe=None,
        trained_encoders=present or [loaded.weights],
        source=loaded.describe(),
    )


def token_grid(encoder: VideoViT | PixelEncoder, frames: int, crop: int) -> TokenGrid:
    """The encoder's token grid for ``frames x crop x crop`` clips (a ConfigError if none)."""
    try:
        return TokenGrid.of_clip(frames, crop, crop, encoder.patch_size, encoder.tubelet)
    except ValueError as exc:
        raise ConfigError(
            f"clips of {frames} frames at {crop}px do not fit the encoder (patch "
            f"{encoder.patch_size}, tubelet {encoder.tubelet}): {exc}"
        ) from None


def encode_clips(
    encoder: VideoViT | PixelEncoder,
    clips: torch.Tensor,
    pool: str = "none",
    device: torch.device | None = None,
    bf16: bool | None = None,
) -> torch.Tensor:
    """uint8 clips ``[B, V, T, H, W, C]`` -> pooled float32 tokens ``[B, V, L, D]`` on
    ``device``: ImageNet-normalised, encoded under ``no_grad`` (with bf16 autocast when ``bf16``,
    by default on CUDA only), the last block's output only (see the module doc), pooled in
    float32. ``encoder`` may be a :class:`~jepactl.features.pixels.PixelEncoder` (the raw-pixel
    baseline: the normalised pixels of each token's cube; no parameters, so on the CPU unless
    ``device`` says otherwise)."""
    if device is None:
        param = next(encoder.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    b, v = clips.shape[:2]
    flat = clips.reshape(b * v, *clips.shape[2:]).to(device, non_blocking=True)
    x = to_model_input(flat)
    grid = encoder.grid(x.shape)
    if bf16 is None:  # as training's precision "auto": bf16 autocast on CUDA only
        bf16 = autocast_bf16("auto", device.type)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        tokens = encoder(x)
    with torch.no_grad():
        tokens = tokens[..., -encoder.embed_dim :].float()
        pooled = pool_tokens(tokens, grid, pool)
    return pooled.reshape(b, v, *pooled.shape[1:])


def export_encoder(
    run_dir: Path, out: Path | None = None, weights: str = "auto", fmt: str = "safetensors"
) -> Path:
    """``jepactl export``: the run's encoder (chosen as for evaluation) as ``fmt`` in ``out``
    (default ``RUN/export``), with a ``config.json`` that
    :func:`jepactl.models.load_exported` rebuilds it from. Returns the folder."""
    check_format(fmt)
    frozen = load_frozen_encoder(run_dir, weights)
    out = out if out is not None else RunDir(run_dir).export
    recipe = frozen.recipe
    if recipe is None:  # load_frozen_encoder reads a run directory, which has its recipe
        raise CheckpointError(f"{run_dir} has no recipe beside its checkpoint; cannot export")
    source = ExportSource(
        jepactl_version=__version__,
        recipe=recipe.display_name,
        run=Path(run_dir).resolve().name,
        step=frozen.step,
        weights=frozen.weights,
        checkpoint_sha256=frozen.sha256,
        input=ExportInput(  # what encode_clips feeds the encoder
            layout="float [B, 3, T, H, W], RGB in [0, 1], then (x - mean) / std",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            frames=recipe.data.num_frames,
            frame_stride=recipe.data.frame_stride,
            crop=recipe.data.crop,
        ),
    )
    save_exported(frozen.encoder, encoder_kwargs(recipe.model), out, source)
    return out

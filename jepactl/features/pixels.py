"""The raw-pixel baseline: a clip's pixels, cut exactly as a recipe's encoder sees them.

``jepactl extract-features DIR --task TASK --pixels RECIPE`` caches the clip itself where an
encoder's tokens would go: normalised as :func:`~jepactl.features.encoder.encode_clips` feeds
an encoder (``to_model_input``: RGB in [0, 1], then ImageNet mean and std), cut into the
non-overlapping ``tubelet x patch x patch`` cubes of RECIPE's encoder on the same
:class:`~jepactl.grid.TokenGrid` ((t, h, w) raster order), each cube flattened to one token of
``3 * tubelet * patch**2`` values (channel, then frame, row, column: the layout of the patch
embedding's Conv3d kernel, so that embedding is one linear map of these tokens), and pooled by
the same :func:`~jepactl.grid.pool_tokens`. A one-frame clip (an image) is cut as ``tubelet``
copies of its frame, which is what the encoder's image path computes. :class:`PixelEncoder`
does the cutting behind the encoder's interface, so extraction (batches, resuming, torchrun
shards) is the encoder's, unchanged.

DIR is a "run" of its own, with no checkpoint: the first such call writes ``DIR/config.yaml``
(:func:`run_config`), a plain dict ``jepactl compare`` reads like a recipe: ``display_name: Raw
pixels``, a ``description`` and a ``pixels:`` mapping of what the features depend on (the
recipe's display name, which every seed's copy of a recipe shares, its ``patch_size`` and
``tubelet``, and the normalisation). Pixel directories of one recipe so have equal configs and
form one row. Any later ``extract-features DIR`` or ``probe TASK --run DIR`` sees the mapping
(:func:`recorded_settings`) and cuts pixels again. The caches name :attr:`PixelSettings.identity`
(``pixels-`` and 12 hex digits of the cut's sha256) where an encoder's name its checkpoint's
sha256, the weights ``pixels`` and the step :data:`PIXEL_STEP`, so a complete cache is reused and
one made with another cut refused, as for encoders.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from einops import rearrange
from torch import nn

from jepactl.data.loader import IMAGENET_MEAN, IMAGENET_STD
from jepactl.errors import ConfigError, one_line
from jepactl.grid import TokenGrid
from jepactl.recipe import load_recipe
from jepactl.rundir import RunDir

#: The ``weights`` of a pixel cache and of every probe result made from one.
PIXEL_WEIGHTS = "pixels"

#: The training step a pixel cache records. Not 0: ``compare`` takes a run whose results all
#: probed step 0 for an untrained encoder (``<name> (untrained)``); pixels are no encoder, and
#: -1 is what a cache without a recorded step reads as.
PIXEL_STEP = -1

#: The key of ``config.yaml`` that marks a pixel baseline's directory.
PIXELS_KEY = "pixels"

DISPLAY_NAME = "Raw pixels"

CHANNELS = 3  # RGB: to_model_input normalises three channels

#: How a cube becomes a token; part of the cache identity, so a change refuses older caches.
TOKEN_LAYOUT = "b c (t dt) (h dh) (w dw) -> b (t h w) (c dt dh dw)"


def _normalisation() -> dict[str, Any]:
    """What ``to_model_input`` does to a uint8 clip, as recorded in ``config.yaml``."""
    return {"scale": "1/255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


@dataclass(frozen=True)
class PixelSettings:
    """What a pixel baseline's features depend on: the encoder's cube and the normalisation."""

    recipe: str  # the recipe's display name (informational; the features do not depend on it)
    patch_size: int
    tubelet: int
    normalisation: dict[str, Any] = field(default_factory=_normalisation, compare=False)

    @classmethod
    def from_recipe(cls, name: str) -> PixelSettings:
        """The cut of recipe ``name``'s encoder (a recipe name or a YAML path)."""
        recipe = load_recipe(name, [])
        label = recipe.display_name or Path(name).with_suffix("").as_posix()
        return cls(label, recipe.model.patch_size, recipe.model.tubelet)

    @classmethod
    def from_config(cls, mapping: Any, where: Path) -> PixelSettings:
        """The ``pixels:`` mapping of ``where`` (a config.yaml), checked."""
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{where}: 'pixels' must be a mapping, got {mapping!r}")
        values: dict[str, int] = {}
        for key in ("patch_size", "tubelet"):
            value = mapping.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{where}: pixels.{key} must be a positive integer, got {value!r}"
                )
            values[key] = value
        norm = mapping.get("normalisation")
        if norm != _normalisation():
            raise ConfigError(
                f"{where}: pixels.normalisation is {norm!r}, but clips are normalised with "
                f"{_normalisation()}; make the pixel baseline again in a new directory"
            )
        recipe = mapping.get("recipe")
        label = str(recipe) if recipe is not None else ""
        return cls(label, values["patch_size"], values["tubelet"])

    @property
    def mapping(self) -> dict[str, Any]:
        """The ``pixels:`` mapping of ``config.yaml``."""
        return {
            "recipe": self.recipe,
            "patch_size": self.patch_size,
            "tubelet": self.tubelet,
            "normalisation": self.normalisation,
        }

    @property
    def identity(self) -> str:
        """``pixels-`` + 12 hex digits of the sha256 of the cut (the caches'
        ``checkpoint_sha256``): equal exactly when the features are."""
        cut = {
            "patch_size": self.patch_size,
            "tubelet": self.tubelet,
            "normalisation": self.normalisation,
            "layout": TOKEN_LAYOUT,
        }
        text = json.dumps(cut, sort_keys=True)
        return "pixels-" + hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """E.g. ``2x16x16 tubelets of 'Baseline V-JEPA (synthetic, CPU)'``."""
        cube = f"{self.tubelet}x{self.patch_size}x{self.patch_size}"
        return f"{cube} tubelets of '{self.recipe}'"


def run_config(settings: PixelSettings) -> dict[str, Any]:
    """The ``config.yaml`` of a pixel baseline's directory."""
    return {
        "display_name": DISPLAY_NAME,
        "description": (
            f"Raw pixels in the encoder's {settings.describe()}, ImageNet-normalised, pooled "
            "as the encoder's tokens; no encoder (jepactl extract-features --pixels)"
        ),
        PIXELS_KEY: settings.mapping,
    }


class PixelEncoder(nn.Module):
    """Stands in for a frozen :class:`~jepactl.models.vit.VideoViT`: the same ``patch_size``,
    ``tubelet``, :meth:`grid` and token order, but its tokens are the pixels of each cube
    (``embed_dim = 3 * tubelet * patch**2``). No parameters."""

    def __init__(self, patch_size: int, tubelet: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet = tubelet
        self.embed_dim = CHANNELS * tubelet * patch_size**2

    def grid(self, clip_shape: Sequence[int]) -> TokenGrid:
        """Token grid of clips shaped ``[B, C, T, H, W]`` (the encoder's)."""
        t, h, w = clip_shape[-3:]
        return TokenGrid.of_clip(t, h, w, self.patch_size, self.tubelet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised clips ``[B, 3, T, H, W]`` -> tokens ``[B, T'·H'·W', 3·tubelet·patch²]``."""
        if x.ndim != 5 or x.shape[1] != CHANNELS:
            raise ValueError(f"expected clips [B, {CHANNELS}, T, H, W], got {tuple(x.shape)}")
        self.grid(x.shape)  # the encoder's checks: whole patches and tubelets
        if x.shape[2] == 1:  # an image: tubelet copies of its frame, as the encoder sees it
            x = x.expand(-1, -1, self.tubelet, -1, -1)
        p = self.patch_size
        return rearrange(x, TOKEN_LAYOUT, dt=self.tubelet, dh=p, dw=p)


@dataclass
class PixelBaseline:
    """A pixel baseline ready to extract: what :class:`~jepactl.features.encoder.FrozenEncoder`
    is to an encoder (the encoder, the weights, and the identity its caches record)."""

    encoder: PixelEncoder
    settings: PixelSettings
    checkpoint: Path  # DIR/config.yaml: the file the features are defined by
    weights: str = PIXEL_WEIGHTS
    step: int = PIXEL_STEP

    @property
    def sha256(self) -> str:
        return self.settings.identity

    @classmethod
    def of(
        cls, run_dir: Path, settings: PixelSettings, device: torch.device | str = "cpu"
    ) -> PixelBaseline:
        encoder = PixelEncoder(settings.patch_size, settings.tubelet).eval().to(device)
        return cls(encoder, settings, RunDir(run_dir).config.resolve())


def _read(run: RunDir) -> Any:
    try:
        return run.read_config()
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{run.config} cannot be read ({one_line(exc)})") from None


def recorded_settings(run_dir: Path) -> PixelSettings | None:
    """The pixel baseline ``run_dir`` is (its ``config.yaml`` holds ``pixels:``), or ``None``
    for any other directory (a trained run, a new one; a config that is not a readable
    mapping is left to whatever reads it as a run's)."""
    run = RunDir(run_dir)
    if not run.is_run():
        return None
    try:
        config = run.read_config()
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(config, dict) or PIXELS_KEY not in config:
        return None
    return PixelSettings.from_config(config[PIXELS_KEY], run.config)


def prepare(run_dir: Path, settings: PixelSettings, asked: str, write: bool = True) -> None:
    """``--pixels asked`` (which gave ``settings``) on ``run_dir``: check that ``run_dir`` is
    new or already this pixel baseline, and give a new one its ``config.yaml`` (when
    ``write``; under torchrun rank 0 writes). A :class:`ConfigError` for a trained run's
    directory or a pixel baseline made with other settings."""
    run = RunDir(run_dir)
    own_dir = "a pixel baseline needs its own directory"
    if not run.is_run():
        if run.has_checkpoint():
            raise ConfigError(f"{run_dir} holds a checkpoint; {own_dir}")
        if not write:
            return
        run.write_config(yaml.safe_dump(run_config(settings), sort_keys=False))
        # another process may have made it the baseline of another recipe meanwhile
    _check_same(run, asked, settings, own_dir)


def _check_same(run: RunDir, recipe: str, settings: PixelSettings, own_dir: str) -> None:
    config = _read(run)
    if not isinstance(config, dict) or PIXELS_KEY not in config:
        raise ConfigError(
            f"{run} is a trained run (its config.yaml has no '{PIXELS_KEY}:'); {own_dir}"
        )
    existing = PixelSettings.from_config(config[PIXELS_KEY], run.config)
    if existing != settings:
        raise ConfigError(
            f"{run} is the pixel baseline of {existing.describe()}, but --pixels {recipe} "
            f"gives {settings.describe()}; each pixel baseline needs its own directory"
        )

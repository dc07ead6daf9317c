"""Public V-JEPA checkpoints onto our ViT (jepactl.models.upstream).

Each test builds a checkpoint in an upstream key layout from the documented names and shapes
(``vjepa-reference.md`` §1, tiny dims), saves it with ``torch.save``, loads it, and checks that
every weight landed and that our forward equals a small reference forward written here from
the documented formulas (pre-LN blocks, V-JEPA 1's sin-cos table, V-JEPA 2's ``.repeat`` RoPE,
V-JEPA 2.1's interleaved RoPE with ``interpolate_rope`` and modality embedding).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jepactl.errors import CheckpointError
from jepactl.models.upstream import load_encoder, table_grid
from jepactl.models.vit import VideoViT, sincos_table_3d

DIM, DEPTH, HEADS, PATCH, TUB = 96, 2, 3, 8, 2
FRAMES, CROP = 4, 32  # grid 2 x 4 x 4
GRID = (FRAMES // TUB, CROP // PATCH, CROP // PATCH)
PREFIX = {"jepa": "module.", "vjepa2": "module.backbone.", "vjepa2.1": "module.backbone."}
LAYOUTS = tuple(PREFIX)


# ---------------------------------------------------------------- checkpoints as upstream saves


def np_sincos_3d(dim: int, t: int, side: int) -> np.ndarray:
    """``get_3d_sincos_pos_embed(uniform_power=True)`` from its description (§1)."""
    n = int(np.ceil(dim / 6) * 2)
    omega = 1.0 / 10000 ** (np.arange(n // 2, dtype=float) / (n / 2.0))
    rows = []
    for d in range(t):
        for h in range(side):
            for w in range(side):
                parts = [np.concatenate([np.sin(p * omega), np.cos(p * omega)]) for p in (d, h, w)]
                rows.append(np.concatenate(parts)[:dim])
    return np.stack(rows)


def encoder_state(
    layout: str, seed: int, depth: int = DEPTH, dim: int = DIM, patch: int = PATCH
) -> dict[str, torch.Tensor]:
    """An encoder state dict with upstream names (no prefix) and random values, for clips of
    ``FRAMES x CROP x CROP``."""
    g = torch.Generator().manual_seed(seed)
    DIM, PATCH = dim, patch  # the shapes below then read as the documented ones
    side = CROP // PATCH

    def rnd(*shape: int, scale: float = 0.1, mean: float = 0.0) -> torch.Tensor:
        return mean + scale * torch.randn(*shape, generator=g)

    sd = {
        "patch_embed.proj.weight": rnd(DIM, 3, TUB, PATCH, PATCH, scale=0.05),
        "patch_embed.proj.bias": rnd(DIM),
    }
    if layout == "jepa":
        table = np_sincos_3d(DIM, FRAMES // TUB, side)
        sd["pos_embed"] = torch.from_numpy(table).float().unsqueeze(0)
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({
            b + "norm1.weight": rnd(DIM, mean=1.0), b + "norm1.bias": rnd(DIM),
            b + "attn.qkv.weight": rnd(3 * DIM, DIM), b + "attn.qkv.bias": rnd(3 * DIM),
            b + "attn.proj.weight": rnd(DIM, DIM), b + "attn.proj.bias": rnd(DIM),
            b + "norm2.weight": rnd(DIM, mean=1.0), b + "norm2.bias": rnd(DIM),
            b + "mlp.fc1.weight": rnd(4 * DIM, DIM), b + "mlp.fc1.bias": rnd(4 * DIM),
            b + "mlp.fc2.weight": rnd(DIM, 4 * DIM), b + "mlp.fc2.bias": rnd(DIM),
        })  # fmt: skip
    if layout == "vjepa2.1":
        for k in range(4):
            sd[f"norms_block.{k}.weight"] = rnd(DIM, mean=1.0)
            sd[f"norms_block.{k}.bias"] = rnd(DIM)
        sd["video_mod_embed"] = rnd(1, 1, DIM)
        sd["img_mod_embed"] = rnd(1, 1, DIM)
        sd["patch_embed_img.proj.weight"] = rnd(DIM, 3, 1, PATCH, PATCH)
        sd["patch_embed_img.proj.bias"] = rnd(DIM)
    else:
        sd["norm.weight"] = rnd(DIM, mean=1.0)
        sd["norm.bias"] = rnd(DIM)
    return sd


def save_checkpoint(
    path: Path, layout: str, depth: int = DEPTH, dim: int = DIM, patch: int = PATCH
) -> dict[str, torch.Tensor]:
    """A training checkpoint as the upstream code saves it; returns the target encoder."""
    prefix = PREFIX[layout]
    student = encoder_state(layout, 1, depth, dim, patch)
    teacher = encoder_state(layout, 2, depth, dim, patch)
    state = {
        "encoder": {prefix + k: v for k, v in student.items()},
        "target_encoder": {prefix + k: v for k, v in teacher.items()},
        "predictor": {prefix + "predictor_embed.weight": torch.zeros(4, dim)},
        "opt": {"state": {}, "param_groups": []},
        "scaler": None,
        "epoch": 3,
        "loss": 0.5,
        "batch_size": 8,
        "world_size": 1,
        "lr": 1e-4,
    }
    torch.save(state, path)
    return teacher


# ---------------------------------------------------------------- the reference forward


def rope_ref(x: torch.Tensor, pos: torch.Tensor, layout: str) -> torch.Tensor:
    """Rotate one axis chunk ``x`` ``[B, H, N, c]`` by positions ``pos`` ``[B, N]``: channel
    ``i`` uses frequency index ``i mod c/2`` (V-JEPA 2's ``.repeat``) or ``i // 2``
    (interleaved), and ``out = x cos + rot(x) sin`` with ``rot(a, b) = (-b, a)`` per pair."""
    c = x.shape[-1]
    omega = 1.0 / 10000 ** (torch.arange(c // 2, dtype=torch.float64) / (c / 2))
    chan = torch.arange(c)
    index = chan % (c // 2) if layout == "vjepa2" else chan // 2
    angle = pos.double()[:, None, :, None] * omega[index]  # [B, 1, N, c]
    partner = x[..., chan ^ 1]
    rot = torch.where(chan % 2 == 0, -partner, partner)
    return (x.double() * angle.cos() + rot.double() * angle.sin()).float()


def reference_forward(
    sd: dict[str, torch.Tensor], layout: str, x: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Their encoder, eval mode, from the documented formulas (no jepactl code)."""
    tokens = F.conv3d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                      stride=(TUB, PATCH, PATCH)).flatten(2).transpose(1, 2)  # fmt: skip
    if layout == "vjepa2.1":
        tokens = tokens + sd["video_mod_embed"]
    if layout == "jepa":
        tokens = tokens + sd["pos_embed"]
    b, n, d = tokens.shape
    h_, w_ = x.shape[3] // PATCH, x.shape[4] // PATCH
    ids = torch.arange(n).expand(b, n) if keep is None else keep
    tokens = torch.stack([tokens[i, ids[i]] for i in range(b)])
    pos = [ids // (h_ * w_), (ids % (h_ * w_)) // w_, ids % w_]
    if layout == "vjepa2.1":  # interpolate_rope onto a 256 px grid at patch 16
        grid = 16
        pos = [pos[0].double(), pos[1] * (grid - 1) / (h_ - 1), pos[2] * (grid - 1) / (w_ - 1)]
    hd = d // HEADS
    c = 2 * ((hd // 3) // 2)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(tokens, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = qkv.reshape(b, -1, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
        if layout != "jepa":
            parts_q, parts_k = [], []
            for axis in range(3):
                sl = slice(axis * c, (axis + 1) * c)
                parts_q.append(rope_ref(q[..., sl], pos[axis], layout))
                parts_k.append(rope_ref(k[..., sl], pos[axis], layout))
            q = torch.cat([*parts_q, q[..., 3 * c :]], dim=-1)
            k = torch.cat([*parts_k, k[..., 3 * c :]], dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, d)
        tokens = tokens + out @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        y = F.layer_norm(tokens, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        hidden = F.gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        tokens = tokens + hidden @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    norm = "norms_block.3." if layout == "vjepa2.1" else "norm."
    return F.layer_norm(tokens, (d,), sd[norm + "weight"], sd[norm + "bias"], eps=1e-6)


def load_options(layout: str) -> dict[str, int]:
    """Heads (width 96 is in no size table) and, for V-JEPA 2.1 at patch 8 (no default grid),
    the ``interpolate_rope`` grid of patch 16."""
    return {"num_heads": HEADS, **({"rope_grid": 16} if layout == "vjepa2.1" else {})}


def clip(batch: int = 2, frames: int = FRAMES, crop: int = CROP) -> torch.Tensor:
    return torch.randn(batch, 3, frames, crop, crop, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_weight_lands(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "latest.pth.tar"
    sd = save_checkpoint(path, layout, depth=4 if layout == "vjepa2.1" else DEPTH)
    loaded = load_encoder(path, **load_options(layout))
    assert loaded.layout == layout
    assert loaded.weights == "target_encoder"
    ours = loaded.encoder.state_dict()
    assert torch.equal(ours["patch_embed.weight"], sd["patch_embed.proj.weight"])
    for i in range(len(loaded.encoder.blocks)):
        p = f"blocks.{i}."
        q, k, v = sd[p + "attn.qkv.bias"].chunk(3)
        assert torch.equal(ours[p + "attn.q_bias"], q)
        assert torch.equal(ours[p + "attn.k_bias"], k)  # timm's EVA would keep it at zero
        assert torch.equal(ours[p + "attn.v_bias"], v)
        for name in ("attn.qkv.weight", "attn.proj.weight", "attn.proj.bias", "norm1.weight",
                     "norm1.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
                     "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):  # fmt: skip
            assert torch.equal(ours[p + name], sd[p + name]), p + name
    if layout == "vjepa2.1":
        bias = sd["patch_embed.proj.bias"] + sd["video_mod_embed"].reshape(-1)
        assert torch.equal(ours["patch_embed.bias"], bias)
        for k in range(4):
            assert torch.equal(ours[f"norms.{k}.weight"], sd[f"norms_block.{k}.weight"])
        assert loaded.encoder.out_blocks == (1, 2, 3, 4)
        assert set(loaded.ignored) == {
            "img_mod_embed", "patch_embed_img.proj.weight", "patch_embed_img.proj.bias"
        }  # fmt: skip
    else:
        assert torch.equal(ours["patch_embed.bias"], sd["patch_embed.proj.bias"])
        assert torch.equal(ours["norms.0.weight"], sd["norm.weight"])
        assert torch.equal(ours["norms.0.bias"], sd["norm.bias"])
        assert loaded.ignored == ()
    if layout == "jepa":
        assert torch.equal(ours["pos_embed"], sd["pos_embed"])
        assert loaded.encoder.positions == "sincos" and loaded.encoder.pos_grid == GRID
    else:
        assert "pos_embed" not in ours
    assert loaded.spec is not None and loaded.spec.k_bias


@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_matches_reference(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "ckpt.pt"
    sd = save_checkpoint(path, layout, depth=4 if layout == "vjepa2.1" else DEPTH)
    encoder = load_encoder(path, **load_options(layout)).encoder
    x = clip()
    with torch.no_grad():
        ours = encoder(x)[..., -DIM:]
        ref = reference_forward(sd, layout, x)
    assert ours.shape == (2, math.prod(GRID), DIM)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)
    keep = torch.tensor([[0, 3, 17, 30], [5, 6, 19, 31]])  # masked: kept tokens only
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(x, keep=keep)[..., -DIM:], reference_forward(sd, layout, x, keep),
            atol=2e-5, rtol=1e-4,
        )  # fmt: skip


def test_rope_layouts_differ(tmp_path: Path) -> None:
    """The reference really tells the layouts apart: V-JEPA 2's .repeat RoPE is not ours."""
    sd = encoder_state("vjepa2", 0)
    x = clip()
    with torch.no_grad():
        a = reference_forward(sd, "vjepa2", x)
        b = reference_forward({**sd}, "interleaved", x)
    assert (a - b).abs().max() > 1e-3


def test_encoder_weights_option(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, "jepa")
    student = encoder_state("jepa", 1)
    for weights in ("encoder", "student"):
        loaded = load_encoder(path, weights=weights, num_heads=HEADS)
        assert loaded.weights == "encoder"
        w = loaded.encoder.state_dict()["blocks.1.attn.qkv.weight"]
        assert torch.equal(w, student["blocks.1.attn.qkv.weight"])


def test_sincos_table_and_grid() -> None:
    """Our table is V-JEPA 1's formula, and the grid is read back from a table's values."""
    table = torch.from_numpy(np_sincos_3d(DIM, 3, 5)).float()
    torch.testing.assert_close(sincos_table_3d(DIM, (3, 5, 5)), table)
    assert table_grid(table.unsqueeze(0)) == (3, 5, 5)
    assert table_grid(torch.from_numpy(np_sincos_3d(1024, 8, 14)).unsqueeze(0)) == (8, 14, 14)


def test_sincos_other_grids(tmp_path: Path) -> None:
    """Fewer frames: the table's first time steps; another frame size: trilinear resize."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, "jepa")
    enc = load_encoder(path, num_heads=HEADS).encoder
    table = enc.state_dict()["pos_embed"]
    short = enc.sincos_positions(enc.grid((1, 3, 2, CROP, CROP)))
    torch.testing.assert_close(short, table[:, :16])
    big = enc.sincos_positions(enc.grid((1, 3, 2 * FRAMES, 2 * CROP, 2 * CROP)))
    cube = table.reshape(1, *GRID, DIM).permute(0, 4, 1, 2, 3)
    ref = F.interpolate(cube, scale_factor=(2, 2, 2), mode="trilinear")
    torch.testing.assert_close(big, ref.permute(0, 2, 3, 4, 1).reshape(1, -1, DIM))


def test_unknown_key_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, "vjepa2")
    state = torch.load(path, weights_only=True)
    state["target_encoder"]["module.backbone.blocks.0.attn.rel_pos"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_encoder(path, num_heads=HEADS)
    msg = str(err.value)
    assert "blocks.0.attn.rel_pos" in msg and "vjepa2" in msg and "\n" not in msg


def test_swiglu_checkpoint_is_refused(tmp_path: Path) -> None:
    """A SwiGLU MLP (fc3) has no place in our GELU blocks: named, not half-loaded."""
    path = tmp_path / "ckpt.pt"
    sd = encoder_state("vjepa2", 0)
    sd["blocks.0.mlp.fc3.weight"] = torch.zeros(DIM, 4 * DIM)
    torch.save({"target_encoder": sd}, path)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.mlp\.fc3\.weight"):
        load_encoder(path, num_heads=HEADS)


def test_missing_weight_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    sd = encoder_state("jepa", 0)
    del sd["blocks.1.mlp.fc2.bias"]
    torch.save({"encoder": sd, "target_encoder": sd}, path)
    with pytest.raises(CheckpointError, match=r"layout jepa.*'blocks\.1\.mlp\.fc2\.bias'"):
        load_encoder(path, num_heads=HEADS)


def test_missing_file_and_unknown_width(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(tmp_path / "nope.pt")
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, "jepa")
    with pytest.raises(CheckpointError, match="num_heads"):
        load_encoder(path)  # width 96 is in no size table


def test_heads_from_size_table(tmp_path: Path) -> None:
    """Documented widths need no num_heads (ViT-S: 384 -> 6 heads)."""
    path = tmp_path / "ckpt.pt"
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(*v.shape, generator=g) for k, v in _resized(384).items()}
    torch.save({"target_encoder": sd}, path)
    assert load_encoder(path).encoder.num_heads == 6


def _resized(dim: int) -> dict[str, torch.Tensor]:
    """Shapes of a one-block V-JEPA 2 encoder of width ``dim``."""
    shapes = {
        "patch_embed.proj.weight": (dim, 3, 2, 16, 16), "patch_embed.proj.bias": (dim,),
        "blocks.0.norm1.weight": (dim,), "blocks.0.norm1.bias": (dim,),
        "blocks.0.attn.qkv.weight": (3 * dim, dim), "blocks.0.attn.qkv.bias": (3 * dim,),
        "blocks.0.attn.proj.weight": (dim, dim), "blocks.0.attn.proj.bias": (dim,),
        "blocks.0.norm2.weight": (dim,), "blocks.0.norm2.bias": (dim,),
        "blocks.0.mlp.fc1.weight": (4 * dim, dim), "blocks.0.mlp.fc1.bias": (4 * dim,),
        "blocks.0.mlp.fc2.weight": (dim, 4 * dim), "blocks.0.mlp.fc2.bias": (dim,),
        "norm.weight": (dim,), "norm.bias": (dim,),
    }  # fmt: skip
    return {k: torch.empty(s) for k, s in shapes.items()}


def test_vjepa21_rope_grid_default() -> None:
    """interpolate_rope's grid is 256 px / patch 16 = 16 cells (252 / 14 = 18), none else."""
    from jepactl.models.upstream import infer_spec

    sd = {**_resized(768), "norms_block.0.weight": torch.empty(768)}
    assert infer_spec(sd, "vjepa2.1").rope_grid == 16
    assert infer_spec(sd, "vjepa2.1", rope_grid=0).rope_grid is None
    assert infer_spec(sd, "vjepa2.1").out_blocks == (1,)


def test_default_vit_is_unchanged() -> None:
    """The new options leave the default encoder's parameters and names as they were."""
    torch.manual_seed(0)
    a = VideoViT(96, 2, 3, patch_size=8)
    assert "pos_embed" not in a.state_dict()
    assert not any(k.endswith("k_bias") for k in a.state_dict())
    assert a.positions == "rope"

from __future__ import annotations

import pytest
import torch

from jepactl.config import ModelConfig
from jepactl.grid import TokenGrid
from jepactl.models import ENCODER_PRESETS, Predictor, VideoViT, build_encoder
from jepactl.models.rope import RotaryEmbedding3D


def small_vit(**kw: object) -> VideoViT:
    torch.manual_seed(0)
    return VideoViT(embed_dim=48, depth=2, num_heads=2, patch_size=8, **kw).eval()  # type: ignore[arg-type]


def test_vit_base_has_about_86m_parameters() -> None:
    enc = build_encoder(ModelConfig(preset="base"))
    n = sum(p.numel() for p in enc.parameters())
    assert 85e6 < n < 87.5e6
    assert enc.out_dim == 768


def test_token_order_and_grid() -> None:
    grid = TokenGrid(4, 3, 5)
    idx = torch.arange(grid.num_tokens)
    c = grid.coords(idx)
    assert c[7].tolist() == [0, 1, 2]
    assert c[-1].tolist() == [3, 2, 4]
    assert ((c[:, 0] * 15 + c[:, 1] * 5 + c[:, 2]) == idx).all()


def test_rope_of_kept_tokens_equals_full_clip_rope() -> None:
    grid = TokenGrid(8, 14, 14)
    rope = RotaryEmbedding3D(64)
    full = rope(grid.coords(torch.arange(grid.num_tokens)).unsqueeze(0))
    keep = torch.randperm(grid.num_tokens)[:300].sort().values.unsqueeze(0)
    assert torch.equal(rope(grid.coords(keep)), full[:, :, keep[0]])
    # 20 rotated channels per axis (64 // 3 // 2 * 2) and 4 channels left untouched.
    sin, cos = full.chunk(2, dim=-1)
    assert rope.axis_dim == 20
    assert torch.equal(sin[..., 60:], torch.zeros_like(sin[..., 60:]))
    assert torch.equal(cos[..., 60:], torch.ones_like(cos[..., 60:]))


def test_encoder_positions_come_from_token_indices() -> None:
    """Encoding all tokens in a shuffled order gives the full-clip output, shuffled."""
    vit = small_vit()
    x = torch.randn(2, 3, 4, 16, 24)
    with torch.no_grad():
        full = vit(x)
        perm = torch.stack([torch.randperm(full.shape[1]) for _ in range(2)])
        shuffled = vit(x, keep=perm)
    expected = torch.stack([full[b, perm[b]] for b in range(2)])
    torch.testing.assert_close(shuffled, expected, atol=1e-5, rtol=1e-5)


def test_masked_tokens_change_the_output_of_the_kept_ones() -> None:
    """Sanity: attention really mixes tokens (so the test above is not vacuous)."""
    vit = small_vit()
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        full = vit(x)
        part = vit(x, keep=torch.arange(4).unsqueeze(0))
    assert not torch.allclose(part, full[:, :4], atol=1e-3)


def test_image_is_a_one_frame_clip_through_the_tubelet_kernel() -> None:
    vit = small_vit()
    img = torch.randn(2, 3, 1, 16, 16)
    static = img.expand(-1, -1, 2, -1, -1)  # the image repeated for one tubelet
    assert vit.grid(img.shape) == TokenGrid(1, 2, 2)
    torch.testing.assert_close(vit.embed(img), vit.embed(static), atol=1e-5, rtol=1e-5)
    assert vit(img).shape == (2, 4, 48)


def test_deep_supervision_concatenates_normalised_levels() -> None:
    cfg = ModelConfig(preset="tiny", deep_supervision=True)
    enc = build_encoder(cfg)
    assert enc.out_blocks == (3, 6, 9, 12)
    assert enc.out_dim == 4 * ENCODER_PRESETS["tiny"].embed_dim
    assert len(enc.norms) == 4
    with pytest.raises(ValueError, match="out_blocks"):
        VideoViT(embed_dim=48, depth=2, num_heads=2, out_blocks=(3,))


def test_predictor_shapes_and_zero_mask_token() -> None:
    torch.manual_seed(0)
    pred = Predictor(in_dim=48, dim=32, depth=2, num_heads=2, predict_context=True)
    assert torch.count_nonzero(pred.mask_tokens) == 0
    grid = TokenGrid(2, 4, 4)
    ctx_idx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    tgt_idx = torch.tensor([[20, 21, 22], [10, 11, 30]])
    tgt, ctx = pred(torch.randn(2, 5, 48), ctx_idx, tgt_idx, grid)
    assert tgt.shape == (2, 3, 48)
    assert ctx is not None and ctx.shape == (2, 5, 48)
    no_ctx = Predictor(in_dim=48, dim=32, depth=1, num_heads=2)
    assert no_ctx(torch.randn(2, 5, 48), ctx_idx, tgt_idx, grid)[1] is None
    assert no_ctx.proj_context is None


def test_predictor_targets_depend_on_their_positions() -> None:
    torch.manual_seed(0)
    pred = Predictor(in_dim=16, dim=16, depth=1, num_heads=2).eval()
    # A zero mask token has a zero query, which attends uniformly whatever its rotation; any
    # trained (non-zero) token is position-dependent.
    pred.mask_tokens.data.normal_()
    grid = TokenGrid(2, 4, 4)
    ctx = torch.randn(1, 4, 16)
    ctx_idx = torch.tensor([[0, 1, 2, 3]])
    a, _ = pred(ctx, ctx_idx, torch.tensor([[20, 31]]), grid)
    b, _ = pred(ctx, ctx_idx, torch.tensor([[31, 20]]), grid)
    torch.testing.assert_close(a, b.flip(1))  # same positions, same predictions
    assert not torch.allclose(a[0, 0], a[0, 1])  # different positions, different predictions


def test_rope_dot_products_depend_only_on_the_position_offset() -> None:
    """The rotary table pairs with timm's interleaved rotation: <R(p)q, R(p')k> = f(p - p')."""
    from timm.layers.pos_embed_sincos import apply_rot_embed_cat

    torch.manual_seed(0)
    rope = RotaryEmbedding3D(24)
    q, k = torch.randn(24), torch.randn(24)
    pos = torch.tensor([[[1, 2, 3], [4, 0, 5], [3, 7, 1], [6, 5, 8]]], dtype=torch.float32)
    shift = torch.tensor([2.0, -1.0, 3.0])

    def dots(p: torch.Tensor) -> torch.Tensor:
        emb = rope(p)[0, 0]  # [N, 2 * head_dim]
        rq = apply_rot_embed_cat(q.expand(4, -1), emb)
        rk = apply_rot_embed_cat(k.expand(4, -1), emb)
        return rq @ rk.T

    torch.testing.assert_close(dots(pos), dots(pos + shift), atol=1e-5, rtol=1e-5)
    rotated = apply_rot_embed_cat(q.expand(4, -1), rope(pos)[0, 0])
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm().expand(4))  # a pure rotation
    assert not torch.allclose(dots(pos)[0], dots(pos)[1])  # positions do matter


def test_target_normalisation_is_per_level() -> None:
    from jepactl.objectives.base import normalize_targets

    h = torch.randn(2, 5, 3 * 8) * torch.tensor([1.0, 10.0, 100.0]).repeat_interleave(8)
    out = normalize_targets(h, 8)
    for level in range(3):
        chunk = h[..., level * 8 : (level + 1) * 8]
        torch.testing.assert_close(
            out[..., level * 8 : (level + 1) * 8], torch.nn.functional.layer_norm(chunk, (8,))
        )


def test_deep_supervision_must_end_at_the_last_block() -> None:
    with pytest.raises(ValueError, match="last block"):
        VideoViT(embed_dim=48, depth=4, num_heads=2, out_blocks=(1, 2))

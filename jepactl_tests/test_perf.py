"""The fast paths compute what the plain ones do, and `jepactl bench pretrain` measures what it
says (figures are measured by the benchmark, never asserted as timings here)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from timm.models.eva import EvaAttention
from typer.testing import CliRunner

from jepactl.bench import count_flops, matmul_ceiling, synth_profile
from jepactl.cli import app
from jepactl.config import Recipe
from jepactl.data.loader import Batch, Collator, StepDataset, to_model_input
from jepactl.data.sources import build_source
from jepactl.grid import TokenGrid
from jepactl.masks import build_mask_strategy
from jepactl.models.attention import RopeAttention
from jepactl.models.rope import RotaryEmbedding3D
from jepactl.models.vit import VideoViT
from jepactl.recipe import load_recipe
from jepactl.train.model import JEPA

runner = CliRunner()


def test_forward_groups_equals_one_forward_per_group() -> None:
    torch.manual_seed(0)
    vit = VideoViT(embed_dim=48, depth=2, num_heads=2, patch_size=8).eval()
    x = torch.randn(2, 3, 4, 32, 32)  # 2 x 4 x 4 = 32 tokens
    keeps = [torch.stack([torch.randperm(32)[:k] for _ in range(2)]) for k in (10, 20)]
    for got, keep in zip(vit.forward_groups(x, keeps), keeps, strict=True):
        torch.testing.assert_close(got, vit(x, keep=keep), rtol=0, atol=0)


def _plain_groups(self: VideoViT, x: torch.Tensor, keeps: list[torch.Tensor]) -> list:
    return [self(x, keep=k) for k in keeps]  # one full forward (and embedding) per group


FAMILIES = ["synth/baseline", "synth/fwm_hw_ld", "synth/kin_l1", "synth/sigreg_no_ema",
            "single/hamiltonian", "synth/ac", "mixed/spectral", "synth/future_predictive",
            "synth/delta", "synth/motion_guided"]  # fmt: skip


def _two_clip_batch(recipe: Recipe) -> tuple[Batch, torch.Tensor]:
    """A collated batch of two synthetic clips with the recipe's masks, and its model input."""
    source = build_source(recipe.data, 0)
    strategies = [build_mask_strategy(spec) for spec in recipe.masks]
    collate = Collator(strategies, recipe.model.patch_size, recipe.model.tubelet, 0, rank=0)
    data = StepDataset(source, 0)
    batch = collate([data[(0, i, i)] for i in range(2)])
    return batch, to_model_input(batch.clips)


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_step_computes_the_plain_steps_losses(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every objective family: the same losses and gradients with the fast paths (one patch
    embedding for all mask groups, RopeAttention's complex rotation) as with the plain ones
    (one encoder pass per group, timm's attention and sin/cos table)."""
    profile = [] if family.startswith("synth/") else synth_profile()
    recipe = load_recipe(family, [*profile, *TINY, "data.batch_size=2"])
    batch, clips = _two_clip_batch(recipe)

    def losses_and_grads(plain: bool = False) -> tuple[dict[str, torch.Tensor], list]:
        torch.manual_seed(0)
        model = JEPA(recipe).train()
        if plain:  # timm's attention with its sin/cos table, as before RopeAttention
            for m in model.modules():
                if isinstance(m, RopeAttention):
                    m.__class__ = EvaAttention
        losses, _ = model(clips, [m for m in batch.masks], step=10)
        sum(losses.values()).backward()  # type: ignore[union-attr]
        return losses, [p.grad for p in model.student.parameters() if p.grad is not None]

    fast, fast_grads = losses_and_grads()
    monkeypatch.setattr(VideoViT, "forward_groups", _plain_groups)
    monkeypatch.setattr(RotaryEmbedding3D, "rotations", RotaryEmbedding3D.forward)
    plain, plain_grads = losses_and_grads(plain=True)
    assert fast.keys() == plain.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("family", ["synth/baseline", "synth/kin_l1"])
def test_activation_checkpointing_keeps_losses_and_gradients(family: str) -> None:
    """``train.activation_checkpointing`` recomputes activations in the backward pass: the
    same losses and gradients of student and predictor (drop-path on, so the recomputed
    forward must replay the same random draws), and the blocks really are recomputed."""
    recipe = load_recipe(family, [*TINY, "data.batch_size=2", "model.drop_path=0.3"])
    batch, clips = _two_clip_batch(recipe)

    def run(recompute: bool) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], int]:
        torch.manual_seed(0)
        train = replace(recipe.train, activation_checkpointing=recompute)
        model = JEPA(replace(recipe, train=train)).train()
        calls = 0
        for blk in model.student.blocks:  # count calls (module hooks are muted in recompute)

            def counted(*args: object, _forward: Callable = blk.forward, **kw: object) -> object:
                nonlocal calls
                calls += 1
                return _forward(*args, **kw)

            blk.forward = counted  # type: ignore[method-assign]
        torch.manual_seed(1)
        losses, _ = model(clips, list(batch.masks), step=10)
        sum(losses.values()).backward()  # type: ignore[union-attr]
        trainable = [*model.student.parameters(), *model.predictor.parameters()]
        return losses, [p.grad for p in trainable if p.grad is not None], calls

    plain, plain_grads, plain_calls = run(False)
    recomputed, grads, calls = run(True)
    assert calls > plain_calls  # the student's blocks ran again in the backward pass
    assert plain.keys() == recomputed.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=0, atol=0, msg=name)
    assert len(grads) == len(plain_grads) > 0
    for a, b in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_rope_attention_is_timms_attention_with_the_same_parameters() -> None:
    torch.manual_seed(0)
    args = dict(num_prefix_tokens=0, norm_layer=torch.nn.LayerNorm, scale_norm=False)
    ref, new = EvaAttention(96, 4, **args), RopeAttention(96, 4, **args)  # type: ignore[arg-type]
    assert ref.state_dict().keys() == new.state_dict().keys()  # checkpoints load either way
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)
    new.load_state_dict(ref.state_dict())
    rope, grid = RotaryEmbedding3D(24), TokenGrid(2, 4, 4)
    coords = grid.coords(torch.stack([torch.randperm(32)[:20] for _ in range(2)]))
    x = torch.randn(2, 20, 96, requires_grad=True)
    want = ref(x, rope=rope(coords))
    (gx_want,) = torch.autograd.grad(want.sum(), x)
    got = new(x, rope=rope.rotations(coords))
    (gx_got,) = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_got, gx_want, rtol=1e-4, atol=1e-5)


def test_flop_count_includes_cpu_attention() -> None:
    q = torch.randn(2, 4, 64, 16, requires_grad=True)
    w = torch.randn(16, 16, requires_grad=True)
    flops = count_flops(lambda: F.scaled_dot_product_attention(q @ w, q, q).sum().backward())
    matmul = 2 * (2 * 4 * 64) * 16 * 16  # q @ w, forward
    attention = 2 * 2 * (2 * 4 * 64 * 64 * 16)  # QK^T and PV
    # forward + backward: the product twice more, attention 2.5x more (recompute included)
    assert flops == 3 * matmul + attention + int(2.5 * attention)


def test_ceiling_is_a_positive_rate() -> None:
    c = matmul_ceiling(torch.device("cpu"), torch.float32, reps=1)
    assert c["n"] == 2048 and 0 < c["tflops"] < 100


@pytest.mark.slow
def test_bench_pretrain_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "perf.json"
    res = runner.invoke(app, ["bench", "pretrain", "--recipe", "synth/baseline", "--recipe",
                              "synth/fwm_hw_ld", "--steps", "1", "--rounds", "2", "--warmup", "1",
                              "--loader-steps", "6", "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["ceiling"]["tflops"] > 0
    rows = {r["recipe"]: r for r in result["recipes"]}
    assert list(rows) == ["synth/baseline", "synth/fwm_hw_ld"]
    for r in rows.values():
        assert r["timed_steps"] == 2 and r["ms_per_step"] > 0
        assert 40 < r["gflop_per_step"] < 60  # 43.9 GFLOP counted by hand for the baseline
        assert 0 < r["mfu"] < 1.5 and r["clips_per_s"] > 0
    assert rows["synth/baseline"]["ratio"] == 1.0
    assert 0 <= result["loader"]["data_wait_frac"] <= 1
    assert "| `synth/fwm_hw_ld` |" in res.output


def test_bench_pretrain_refuses_an_unknown_recipe() -> None:
    res = runner.invoke(app, ["bench", "pretrain", "--recipe", "synth/basline"])
    assert res.exit_code == 2 and "Did you mean 'synth/baseline'?" in res.output


@pytest.mark.slow
def test_bench_times_a_compiled_variant_beside_the_eager_one() -> None:
    """``bench pretrain --compile both``: each recipe twice, the compiled row with its first
    step's time (compilation included) and the eager step's FLOP count."""
    from jepactl.bench import _warmed_up

    fixed = ["masks.0.lengths=fixed", "masks.1.lengths=fixed"]  # test_compile's run's shapes
    recipe = load_recipe("synth/baseline", [*TINY, *fixed])
    prepared, memory, first = _warmed_up({"tiny": recipe}, torch.device("cpu"), 2, print,
                                         (False, True))  # fmt: skip
    assert [p.label for p in prepared] == ["tiny", "tiny (compiled)"]
    assert set(first) == set(memory) == {"tiny", "tiny (compiled)"}
    assert first["tiny (compiled)"] > first["tiny"] > 0  # compiling is in the first step
    eager, compiled = prepared
    assert compiled.flops() == eager.flops() > 0

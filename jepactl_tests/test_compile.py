"""``train.compile``: the step traces as one graph, and the compiled step computes what the
eager one does, for every objective family (docs/performance.md)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch._dynamo
from conftest import TINY

from jepactl.bench import size_overrides
from jepactl.data.loader import Collator, StepDataset
from jepactl.data.sources import build_source
from jepactl.masks import build_mask_strategy
from jepactl.objectives import StepContext
from jepactl.recipe import load_recipe
from jepactl.train.compiled import compile_decision
from jepactl.train.model import JEPA

#: One recipe per objective family (and the EMA-free and future-predictive set-ups).
FAMILIES = {
    "synth/baseline": "jepa + context",
    "synth/fwm_hw_ld": "factorised, hard-weighted, latent dynamics",
    "synth/kin_l1": "kinematic, no EMA",
    "synth/sigreg": "SIGReg",
    "synth/sigreg_no_ema": "SIGReg, targets from the student",
    "synth/ld": "latent dynamics",
    "synth/delta": "Delta",
    "mixed/ltc": "LTC",
    "mixed/spectral": "spectral",
    "synth/ac": "action-conditioned",
    "single/velgate": "velocity-gated kinematic",
    "synth/future_predictive": "future-predictive masks",
    "single/hamiltonian": "Hamiltonian (double backward: not one graph)",
}
#: Terms whose loss needs ``torch.autograd.grad`` inside the step: Dynamo does not trace a
#: double backward, so that part runs eagerly (``torch.compiler.disable``) between graphs.
NOT_ONE_GRAPH = {"single/hamiltonian"}


def tiny_step(name: str) -> tuple[JEPA, StepContext]:
    """A micro-sized model of recipe ``name`` and the context of one collated step, masks with
    fixed lengths (two batch sizes, two steps)."""
    fixed = [f"masks.{i}.lengths=fixed" for i in range(len(load_recipe(name).masks))]
    tiny = [o for o in TINY if not o.startswith("objective.")]  # not every recipe has them
    overrides = [*size_overrides(name, "synth"), *tiny, *fixed, "train.seed=3"]
    recipe = load_recipe(name, overrides)
    torch.manual_seed(0)
    model = JEPA(recipe).train()
    strategies = [build_mask_strategy(spec) for spec in recipe.masks]
    collate = Collator(strategies, recipe.model.patch_size, recipe.model.tubelet, 0, rank=0)
    data = StepDataset(build_source(recipe.data, 0), 0)
    batch = collate([data[(0, i, i)] for i in range(recipe.data.batch_size)])
    return model, model.context(batch.clips, batch.masks, 7)  # uint8, normalised in the step


def fresh(ctx: StepContext) -> StepContext:
    """The same step's inputs with nothing computed yet (the memoised work dropped)."""
    return StepContext(
        clips=ctx.clips, masks=ctx.masks, step=ctx.step, student=ctx.student,
        predictor=ctx.predictor, teacher=ctx.teacher, stopgrad_targets=ctx.stopgrad_targets,
        full_clip_grad=ctx.full_clip_grad, epoch=ctx.epoch, num_epochs=ctx.num_epochs,
        seed=ctx.seed, coefficients=dict(ctx.coefficients), draws=dict(ctx.draws),
    )  # fmt: skip


@pytest.mark.parametrize("name", ["synth/baseline", "synth/fwm_hw_ld"])
def test_the_step_traces_as_one_graph(name: str) -> None:
    """``torch._dynamo.explain`` on the step of issue 25's two recipes: one graph, no break.
    (Every other family is checked the same way, through Dynamo's counters, below.)"""
    model, ctx = tiny_step(name)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.losses)(fresh(ctx))
    reasons = [b.reason.splitlines()[0] for b in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1


def _losses_and_grads(
    model: JEPA, ctx: StepContext
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    losses = model.losses(ctx)
    torch.stack(list(losses.values())).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


#: Inductor (what ``train.compile`` uses) costs about a minute of compilation on two cores, so
#: it checks FWM-HW-LD (its step has the baseline's terms and more); every family goes
#: through ``aot_eager``: the same Dynamo graph and AOTAutograd backward, run by eager kernels.
BACKENDS = [
    *(pytest.param(name, "aot_eager", id=f"{name}-aot_eager") for name in sorted(FAMILIES)),
    pytest.param(
        "synth/fwm_hw_ld", "inductor", id="synth/fwm_hw_ld-inductor", marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize(("name", "backend"), BACKENDS)
def test_compiled_and_eager_steps_give_the_same_losses_and_gradients(
    name: str, backend: str
) -> None:
    """Compiled vs eager on identical weights and inputs: one graph with no break (but where
    a term says it cannot be one), and every loss term and every parameter's gradient agree
    to fp32 rounding (the RoPE rotation takes its real form when compiled, the complex
    product in eager)."""
    from torch._dynamo.utils import counters

    model, ctx = tiny_step(name)
    twin = copy.deepcopy(model)
    eager_losses, eager_grads = _losses_and_grads(model, fresh(ctx))
    torch._dynamo.reset()
    counters.clear()
    twin.losses = torch.compile(twin.losses, backend=backend, dynamic=False)  # type: ignore[method-assign]
    compiled_ctx = fresh(ctx)
    compiled_ctx.student, compiled_ctx.predictor = twin.student, twin.predictor
    compiled_ctx.teacher = twin.teacher
    losses, grads = _losses_and_grads(twin, compiled_ctx)
    breaks = dict(counters["graph_break"])
    if name in NOT_ONE_GRAPH:
        assert breaks and all("disable()" in r for r in breaks), breaks  # the eager part
    else:
        assert not breaks and counters["stats"]["unique_graphs"] == 1, breaks
    assert losses.keys() == eager_losses.keys()
    for key, value in eager_losses.items():
        torch.testing.assert_close(losses[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert grads.keys() == eager_grads.keys()
    for key, value in eager_grads.items():
        torch.testing.assert_close(grads[key], value, rtol=1e-3, atol=1e-5, msg=key)


def test_auto_compiles_on_cuda_with_fixed_mask_lengths_only() -> None:
    recipe = load_recipe("synth/baseline")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compile_decision(recipe, cpu) == (False, "train.compile: auto, off on the CPU")
    on, why = compile_decision(recipe, cuda)
    assert not on and "masks.0, masks.1" in why and "lengths=fixed" in why
    fixed = load_recipe("synth/baseline", ["masks.0.lengths=fixed", "masks.1.lengths=fixed"])
    assert compile_decision(fixed, cuda)[0]
    assert compile_decision(load_recipe("synth/baseline", ["train.compile=true"]), cpu)[0]
    assert not compile_decision(load_recipe("synth/baseline", ["train.compile=false"]), cuda)[0]


@pytest.mark.slow
def test_a_compiled_ddp_run_logs_one_graph_and_trains_as_the_eager_one(tmp_path: Path) -> None:
    """The must-show of issue 25 at micro size, under torchrun (two gloo ranks): the run's log
    says the step compiled into one graph with no break and never recompiled, and its losses
    are the eager run's to fp32 rounding."""
    import subprocess

    from runfixtures import REPO, TORCHRUN

    from jepactl.train.metrics import read_metrics

    fixed = ["masks.0.lengths=fixed", "masks.1.lengths=fixed"]
    losses = {}
    for mode in ("false", "true"):
        run = tmp_path / mode
        sets = [a for o in [*TINY, *fixed, f"train.compile={mode}"] for a in ("--set", o)]
        args = ["jepactl", "pretrain", "--recipe", "synth/baseline", "--run-dir", str(run),
                "--max-steps", "3", *sets]  # fmt: skip
        done = subprocess.run([*TORCHRUN, *args], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        losses[mode] = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
        log = (run / "log.txt").read_text()
    assert "train.compile: true" in log
    assert "1 graph, 0 graph breaks" in log
    assert "recompiled" not in log and "graph break (" not in log
    assert len(losses["true"]) == 3
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-5)


def test_the_real_rotation_of_a_compiled_step_is_the_complex_one() -> None:
    """RoPE as real (cos, sin) pairs, the form inductor fuses, turns q and k exactly as the
    complex product of the eager step does."""
    from jepactl.models.attention import rotate_pairs
    from jepactl.models.rope import RotaryEmbedding3D

    rope = RotaryEmbedding3D(head_dim=16)
    coords = torch.randint(0, 7, (2, 10, 3))
    rotations = rope.rotations(coords)
    x = torch.randn(2, 2, 3, 10, 16)
    real = torch.stack((rotations.real, rotations.imag), dim=-1)
    torch.testing.assert_close(rotate_pairs(x, real), rotate_pairs(x, rotations))
    compiled = torch.compile(rope.rotations, backend="eager", fullgraph=True)(coords)
    torch.testing.assert_close(compiled, real)


def test_the_log_reports_the_first_compile_breaks_and_every_recompile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``CompiledStep`` says after each step, from Dynamo's counters (faked here)."""
    import logging

    from jepactl.train import compiled

    counts = iter([(0, 0, {}), (1, 1, {"a reason\nmore": 1}), (1, 1, {}), (2, 1, {}), (8, 3, {})])
    monkeypatch.setattr(compiled, "_dynamo_counts", lambda: next(counts))
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("jepactl").addHandler(handler)
    try:
        model = JEPA(load_recipe("synth/baseline", TINY))
        step = compiled.CompiledStep(model)  # the base counts: (0, 0)
        for i in range(1, 5):
            step.before_step()
            step.after_step(i)
    finally:
        logging.getLogger("jepactl").removeHandler(handler)
    assert lines[0].startswith("compiled the step in ") and "1 graph, 1 graph break" in lines[0]
    assert lines[1] == "graph break (1x): a reason"
    assert lines[2] == "step 3: recompiled the step for new mask sizes (2 graphs of at most 8)"
    assert lines[3].endswith("(8 graphs of at most 8; from now on new sizes run eagerly)")
    assert lines[4] == "step 4: 2 more graph break(s)"
    assert len(lines) == 5

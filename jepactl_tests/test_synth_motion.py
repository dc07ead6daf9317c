"""synth-motion: the reference's clip generator, the on-disk cache, and scoring end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from jepactl.cli import app
from jepactl.config import ConfigError
from jepactl.features.clips import EvalSource
from jepactl.features.synth_motion import (
    DIRECTION_VELOCITIES,
    MIXED_CLASSES,
    PROTOCOLS,
    MotionDataSpec,
    data_spec,
    direction_scene,
    ensure_dataset,
    mixed_scene,
    motion_benchmark,
    render_direction_clip,
    render_mixed_clip,
)
from jepactl.probe.records import result_from_json
from jepactl.probe.synth_motion import score_run
from jepactl.report.synth_motion import format_table
from jepactl.stats import summarize
from jepactl.train.loop import pretrain

#: The default protocol shrunk to the micro encoder: 4 frames of 32x32, 16 + 16 clips.
TINY = replace(PROTOCOLS["default"], name="tiny", n_train=16, n_val=16, frames=4, size=32)


def test_reference_draws_match_the_spec() -> None:
    """The spec recomputed from the reference's RNG: in the first 8 frames of the 200 clips,
    136 move unclipped, 61 are partly clipped and 3 never move, all 3 in the train split."""
    counts = {"free": 0, "partial": 0, "static": 0}
    static = []
    t = np.arange(8)
    for i in range(200):
        scene = direction_scene(42 + i)
        cx, cy = scene.centers(i % 8, 8, 160)
        dx, dy = DIRECTION_VELOCITIES[i % 8]
        if np.array_equal(cx, scene.x0 + dx * t) and np.array_equal(cy, scene.y0 + dy * t):
            counts["free"] += 1
        elif len(set(zip(cx.tolist(), cy.tolist(), strict=True))) == 1:
            counts["static"] += 1
            static.append(i)
        else:
            counts["partial"] += 1
    assert counts == {"free": 136, "partial": 61, "static": 3}
    assert all(i < 160 for i in static)


def test_direction_clip_pixels() -> None:
    """Disc pixels take the flat colour; everything else is background + grey noise < 30."""
    clip = render_direction_clip(42 + 10, 2)  # label 2: east
    scene = direction_scene(42 + 10)
    assert clip.shape == (8, 160, 160, 3) and clip.dtype == np.uint8
    cx, cy = scene.centers(2, 8, 160)
    yy, xx = np.mgrid[:160, :160]
    for t in range(8):
        inside = (xx - cx[t]) ** 2 + (yy - cy[t]) ** 2 <= scene.radius**2
        assert (clip[t][inside] == scene.color).all()
        rest = clip[t][~inside].astype(int) - scene.background.astype(int)
        assert rest.min() >= 0 and rest.max() < 30
        assert (rest[:, 0] == rest[:, 1]).all()  # grey: the same noise on all channels
        np.testing.assert_array_equal(rest[:, 0], scene.noise[t][~inside][:, 0])
    assert cx[1] - cx[0] == 4 or cx[0] == 160 - scene.radius - 1  # east at 4 px/frame


def test_mixed_clips_are_deterministic() -> None:
    a = render_mixed_clip((1, 0, 5), 0)
    np.testing.assert_array_equal(a, render_mixed_clip((1, 0, 5), 0))
    assert a.shape == (8, 160, 160, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, render_mixed_clip((1, 0, 6), 0))
    with pytest.raises(ValueError):
        render_mixed_clip(0, 8)


def test_mixed_classes_differ_only_in_motion() -> None:
    """Each class has exactly its motion (sign included), and the nuisances seen at mid-clip
    (size, place, angle) are drawn from one distribution for every class."""
    mid = 3.5  # (8 frames - 1) / 2
    for i in range(64):
        label = i % 8
        obj, background = mixed_scene((7, 0, i), label)
        vx, vy = obj.velocity
        expected = {
            "right": vx > 0 and vy == 0, "left": vx < 0 and vy == 0,
            "up": vy < 0 and vx == 0, "down": vy > 0 and vx == 0,
            "clockwise": obj.angular_velocity > 0, "anticlockwise": obj.angular_velocity < 0,
            "grow": obj.scale_rate > 1, "shrink": obj.scale_rate < 1,
        }  # fmt: skip
        name = MIXED_CLASSES[label]
        assert expected[name], (name, obj)
        moves = (vx, vy) != (0.0, 0.0)
        turns = obj.angular_velocity != 0.0
        scales = obj.scale_rate != 1.0
        assert moves + turns + scales == 1  # one motion per class, nothing else moves
        assert 0.12 <= obj.radius * obj.scale_rate**mid <= 0.20 + 1e-9
        cx, cy = obj.center[0] + mid * vx, obj.center[1] + mid * vy
        assert 0.3 <= cx <= 0.7 and 0.3 <= cy <= 0.7
        if obj.shape in ("disc", "ring"):
            assert obj.texture != "flat"  # otherwise turning would be invisible
        assert background.noise_std > 0


def test_spec_keys_and_validation() -> None:
    ref = data_spec("directions", "reference", 0)
    assert (ref.n_train, ref.n_val, ref.frames, ref.size) == (160, 40, 8, 160)
    assert ref.key() != data_spec("directions", "reference", 1).key()
    assert ref.key() != data_spec("mixed", "reference", 0).key()
    assert ref.key() == data_spec("directions", "reference", 0).key()
    with pytest.raises(ConfigError, match="multiples of 8"):
        MotionDataSpec("directions", 12, 8)
    with pytest.raises(ConfigError, match="directions"):
        MotionDataSpec("direction", 8, 8)


def test_dataset_cache(tmp_path: Path) -> None:
    spec = MotionDataSpec("directions", n_train=16, n_val=8, frames=4, size=32)
    root = ensure_dataset(spec, tmp_path, num_workers=0, progress=False)
    assert sorted(p.name for p in root.iterdir()) == [
        "clips",
        "dataset.json",
        "train.csv",
        "val.csv",
    ]
    train_rows = (root / "train.csv").read_text().splitlines()
    assert len(train_rows) == 16 and [int(r.split()[1]) for r in train_rows[:9]] == [*range(8), 0]
    assert len((root / "val.csv").read_text().splitlines()) == 8
    assert not list(tmp_path.glob("synth-motion/*.tmp-*"))  # built under a temporary name
    # A second call reuses the folder; a folder that does not match its key is refused.
    stamp = (root / "dataset.json").stat().st_mtime_ns
    assert ensure_dataset(spec, tmp_path, progress=False) == root
    assert (root / "dataset.json").stat().st_mtime_ns == stamp
    manifest = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**manifest, "generator_version": -1}))
    with pytest.raises(ConfigError, match="delete"):
        ensure_dataset(spec, tmp_path, progress=False)


def test_clips_decode_through_the_benchmark_path(tmp_path: Path) -> None:
    """The real decode path: the csv reader over <root>/<split>.csv, the first frames, no
    resize; H.264 at crf 23 keeps the rendered pixels close."""
    spec = MotionDataSpec("directions", n_train=8, n_val=8, frames=4, size=64)
    root = ensure_dataset(spec, tmp_path, num_workers=0, progress=False)
    bench = motion_benchmark(spec, TINY)
    source = EvalSource(bench, "val", roots={"csv": root})
    assert len(source) == 8 and source.protocol()["frame_sampling"].startswith("the first")
    sample = source[3]
    assert sample.clip.shape == (1, 4, 64, 64, 3) and sample.label == 3
    rendered, label = spec.render(8 + 3)
    assert label == 3
    err = np.abs(sample.clip[0].numpy().astype(float) - rendered.astype(float)).mean()
    # H.264 on a noisy frame: ~3.4 grey levels off; the neighbouring frame would be ~12.8 off.
    assert err < 6.0


def test_summarize_t_interval() -> None:
    from scipy import stats

    s = summarize([60.0, 62.5, 65.0])
    assert s["mean"] == pytest.approx(62.5) and s["std"] == pytest.approx(2.5)
    half = stats.t.ppf(0.975, 2) * 2.5 / math.sqrt(3)
    assert s["ci95"] == pytest.approx([62.5 - half, 62.5 + half])
    assert summarize([70.0]) == {"mean": 70.0, "std": None, "ci95": None, "n": 1}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import TINY as TINY_RECIPE

    run_dir = tmp_path_factory.mktemp("run") / "baseline"
    pretrain("synth/baseline", TINY_RECIPE, run_dir=run_dir, max_steps=2, progress=False)
    return run_dir


def test_score_run_writes_a_result_compare_reads(tiny_run: Path, tmp_path: Path) -> None:
    result = score_run(tiny_run, "mixed", TINY, seeds=2, cache_dir=tmp_path, num_workers=0,
                       progress=False)  # fmt: skip
    saved = json.loads((tiny_run / "probes" / "synth-motion-mixed-tiny.json").read_text())
    assert saved == result.to_json()
    assert result_from_json(saved, "saved") == result  # read back as the same record
    assert result.n_seeds == 2 and len(result.per_seed) == 2
    values = [r.top1 for r in result.per_seed]
    assert result.top1 == pytest.approx(np.mean(values), abs=1e-3)
    assert result.top1_std == pytest.approx(np.std(values, ddof=1), abs=1e-3)
    lo, hi = result.top1_ci95
    assert lo <= result.top1 <= hi
    assert result.protocol_name == "tiny" and result.weights == "teacher"
    assert result.n_val == 16 and result.hparams["features"] == "flat"
    assert not (tiny_run / "features").exists() or not any((tiny_run / "features").iterdir())
    # Two seeds drew two datasets.
    assert len({r.dataset for r in result.per_seed}) == 2
    table = format_table([("Baseline", result)], "mixed", TINY, markdown=True)
    assert "| Baseline |" in table and "(2)" in table and "95%" in table

    from jepactl.report.compare import build_table, collect_runs, render_markdown

    runs, bad = collect_runs([str(tiny_run)])
    assert not bad
    md = render_markdown(build_table(runs, unreadable=bad))
    assert f"{result.top1:.2f}" in md


def _run_shrunk_reference(
    monkeypatch: pytest.MonkeyPatch, run: Path, cache: Path, *flags: str
) -> Result:
    """``jepactl synth-motion RUN FLAGS`` on the reference protocol with its clips shrunk (the
    real ones would take minutes on a CPU; the 160/40 split is kept)."""
    monkeypatch.setitem(
        PROTOCOLS, "reference", replace(PROTOCOLS["reference"], frames=4, size=32, epochs=1)
    )
    res = CliRunner().invoke(
        app, ["synth-motion", str(run), *flags, "--cache-dir", str(cache), "--workers", "0"]
    )
    assert res.exit_code == 0, res.output
    return res


def test_cli_synth_motion_reference_split(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI on the real reference protocol would take minutes on a CPU; shrink its clips
    (not its split) to show the 160/40 split is what runs and is printed."""
    res = _run_shrunk_reference(monkeypatch, tiny_run, tmp_path, "--protocol", "reference")
    assert "160 train / 40 test" in res.output and "Accuracy (%)" in res.output
    saved = json.loads(
        (tiny_run / "probes" / "synth-motion-directions-reference.json").read_text()
    )  # its own file: the default protocol's result is not overwritten
    assert (saved["n_train"], saved["n_val"]) == (160, 40)
    assert saved["probe"] == "attentive-reference" and saved["protocol_name"] == "reference"
    assert saved["bench"] == "synth-motion-directions-reference"  # the file stem, as compare reads
    assert saved["profile"] == "paper"  # the reference protocol on the run's own weights


def test_cli_synth_motion_profile_reference_is_the_reference_protocol_and_weights(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--profile reference``: the reference protocol, scored on what the reference scored
    (the EMA teacher here), recorded as the reference profile; compare says so."""
    _run_shrunk_reference(monkeypatch, tiny_run, tmp_path, "--profile", "reference")
    saved = json.loads((tiny_run / "probes" / "synth-motion-directions-reference.json").read_text())
    assert (saved["n_train"], saved["n_val"]) == (160, 40)
    assert (saved["profile"], saved["weights"]) == ("reference", "teacher")
    from jepactl.report.compare import build_table, collect_runs, render_markdown

    runs, bad = collect_runs([str(tiny_run)])
    md = render_markdown(build_table(runs, unreadable=bad))
    assert "evaluated as the paper's code did" in md and "synth-motion-directions-reference" in md


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint"):
        score_run(tmp_path, "directions", TINY, cache_dir=tmp_path, progress=False)


def test_failed_build_leaves_no_partial_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = MotionDataSpec("mixed", n_train=8, n_val=8, frames=4, size=32)
    real = MotionDataSpec.render

    def fail_at_5(self: MotionDataSpec, index: int) -> tuple[np.ndarray, int]:
        if index == 5:
            raise RuntimeError("disk full")
        return real(self, index)

    monkeypatch.setattr(MotionDataSpec, "render", fail_at_5)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_dataset(spec, tmp_path, num_workers=0, progress=False)
    assert list((tmp_path / "synth-motion").iterdir()) == []
    monkeypatch.setattr(MotionDataSpec, "render", real)
    root = ensure_dataset(spec, tmp_path, num_workers=0, progress=False)
    assert len(list((root / "clips").iterdir())) == 16


def test_bad_weights_fail_before_any_clip_is_written(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="student"):
        score_run(tiny_run, "directions", TINY, weights="studnet", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="device 'gpu'"):
        score_run(tiny_run, "directions", TINY, device="gpu", cache_dir=tmp_path)
    assert not (tmp_path / "synth-motion").exists()

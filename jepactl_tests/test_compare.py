"""``jepactl.report.compare``: the paper's Tables 3 and 4 reproduced from run directories, seed
grouping with Welch intervals, unreadable runs, protocols, baselines, sorting, formats, Figure 2.
"""

from __future__ import annotations

import csv
import io
import json
import math
import stat
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import stats

from jepactl.config import ConfigError
from jepactl.probe.records import result_from_json
from jepactl.report.compare import (
    DAGGER_NOTE,
    STAR_NOTE,
    CompareTable,
    Row,
    build_table,
    collect_runs,
    highlight_row,
    plot_deltas,
    protocol_label,
    render_csv,
    render_json,
    render_markdown,
    render_text,
)
from jepactl.utils import current_umask

BENCHES = ("diving48", "in100", "ssv2")

# Paper Table 4 (mixed-dataset pretraining): Method, then (value, printed Δ) per benchmark
# in the order Diving-48, ImageNet-100, SSv2. The baseline has no Δ.
TABLE4 = """
Baseline 8.68 - 24.86 - 8.39 -
FWM-HW-LD 8.38 -0.30 30.78 +5.92 11.60 +3.21
LD-JEPA 6.95 -1.73 22.80 -2.06 13.41 +5.02
FWM-JEPA 7.16 -1.52 26.74 +1.88 7.00 -1.39
AC+HW-JEPA 9.39 +0.71 18.14 -6.72 4.88 -3.51
AMG-JEPA 5.89 -2.79 23.54 -1.32 7.78 -0.61
HW-JEPA 8.98 +0.30 18.46 -6.40 6.30 -2.09
HW-LD-JEPA 7.92 -0.76 19.78 -5.08 5.41 -2.98
FWM-LD-JEPA 6.40 -2.28 14.72 -10.14 7.63 -0.76
Combo 7.16 -1.52 18.60 -6.26 5.00 -3.39
Delta-JEPA 7.41 -1.27 16.76 -8.10 3.80 -4.59
AC-JEPA 8.38 -0.30 11.70 -13.16 4.21 -4.18
FAC-JEPA 8.38 -0.30 8.58 -16.28 3.08 -5.31
LTC-JEPA 7.77 -0.91 11.34 -13.52 4.32 -4.07
Spectral-JEPA 5.69 -2.99 12.62 -12.24 3.37 -5.02
"""

# Paper Table 3 (UCF-101 pretraining): per benchmark (value, printed arrow); None = the paper
# shows no value. Univ. as printed.
TABLE3: list[tuple[str, list[tuple[float, str] | None], str]] = [
    ("Baseline V-JEPA", [(8.38, ""), (12.02, ""), (2.07, "")], ""),
    ("Motion-Guided", [(8.68, "↑"), (12.16, "↑"), (3.45, "↑")], "Yes"),
    ("Kin.-L1 (λ=1.0)", [(5.58, "↓"), (13.64, "↑"), None], "No"),
    ("Kin.-L1 (λ=0.1)", [(5.84, "↓"), (13.66, "↑"), (3.07, "↑")], "No"),
    ("Kin.-Accel", [(5.79, "↓"), (13.74, "↑"), (3.18, "↑")], "No"),
    ("Kin.-Huber", [(5.99, "↓"), None, None], "No"),
    ("Kin.-Split", [(5.48, "↓"), (13.58, "↑"), None], "No"),
    ("Kin.-Anneal", [(5.63, "↓"), None, None], "No"),
    ("SIGReg", [(6.29, "↓"), None, None], "No"),
    ("SIGReg-no-EMA", [(5.99, "↓"), None, None], "No"),
    ("Hamiltonian", [(6.04, "↓"), None, None], "No"),
    ("VelGate", [(5.84, "↓"), None, None], "No"),
    ("Future-Predictive", [(7.11, "↓"), None, None], "No"),
    ("Motion-Future", [(6.45, "↓"), None, None], "No"),
]


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def result(bench: str, top1: float, **extra: Any) -> dict[str, Any]:
    out = {
        "bench": bench,
        "top1": top1,
        "probe": "linear" if bench == "in100" else "attentive",
        "weights": "teacher",
        "hparams": {"impl": "torch", "epochs": 50},
        "pooling": "none",
        "seed": 0,
    }
    out.update(extra)
    return out


def make_run(
    path: Path,
    name: str,
    values: dict[str, float | dict[str, Any]],
    seed: int = 0,
    **config: Any,
) -> Path:
    """A run dir: config.yaml and probes/<bench>.json (a float means a default result)."""
    (path / "probes").mkdir(parents=True, exist_ok=True)
    cfg = {"display_name": name, "description": f"{name} run", "train": {"seed": seed}}
    for key, value in config.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    for bench, value in values.items():
        data = value if isinstance(value, dict) else result(bench, value)
        (path / "probes" / f"{bench}.json").write_text(json.dumps(data))
    return path


def table4_runs(root: Path) -> dict[str, dict[str, str]]:
    """Write the Table 4 runs; return the printed Δs by method and bench."""
    printed = {}
    for i, line in enumerate(TABLE4.strip().splitlines()):
        name, *cells = line.split()
        values = {b: float(cells[2 * j]) for j, b in enumerate(BENCHES)}
        make_run(root / f"run{i:02d}", name, values)
        printed[name] = {b: cells[2 * j + 1] for j, b in enumerate(BENCHES)}
    return printed


def table3_runs(root: Path) -> None:
    for i, (name, cells, _) in enumerate(TABLE3):
        values = {b: c[0] for b, c in zip(BENCHES, cells, strict=True) if c is not None}
        make_run(root / f"run{i:02d}", name, values)


def parse_markdown(md: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The header and {label: {header: cell}} of the first markdown table in ``md``."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]
    header, body = split[0], split[2:]
    assert set(lines[1]) <= set("|-")
    rows = {}
    for cells in body:
        assert len(cells) == len(header)
        # Headers repeat ("Δ"): key a Δ column by the benchmark header before it.
        keyed, last = {}, ""
        for h, c in zip(header, cells, strict=True):
            key = f"{last} Δ" if h == "Δ" else h
            last = h if h != "Δ" else last
            keyed[key] = c
        rows[cells[0]] = keyed
    return header, rows


def table(root: Path, **kwargs: Any) -> CompareTable:
    runs, bad = collect_runs([str(root)])
    return build_table(runs, unreadable=bad, **kwargs)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def row(t: CompareTable, label: str) -> Row:
    return next(r for r in t.rows if r.label == label)


HEAD = {"diving48": "Diving-48", "in100": "ImageNet-100", "ssv2": "SSv2"}


# --------------------------------------------------------------------------------------
# The paper's tables
# --------------------------------------------------------------------------------------


def test_table4_deltas_match_the_paper_exactly(tmp_path: Path) -> None:
    printed = table4_runs(tmp_path)
    header, rows = parse_markdown(render_markdown(table(tmp_path)))
    assert header == ["Method", "Diving-48", "Δ", "ImageNet-100", "Δ", "SSv2", "Δ", "Univ."]
    assert next(iter(rows)) == "Baseline"
    checked = 0
    for name, deltas in printed.items():
        for bench, want in deltas.items():
            cell = rows[name][f"{HEAD[bench]} Δ"]
            if name == "Baseline":
                assert cell == ""
                continue
            number, arrow = cell.split()
            assert number == want, (name, bench, cell)
            assert arrow == ("↑" if want.startswith("+") else "↓")
            checked += 1
    assert checked == 42
    assert rows["FWM-HW-LD"]["ImageNet-100"] == "**30.78**"
    assert rows["LD-JEPA"]["SSv2"] == "**13.41**"
    assert rows["AC+HW-JEPA"]["Diving-48"] == "**9.39**"
    assert rows["Baseline"]["Diving-48"] == "8.68"
    bold = [n for n, r in rows.items() for h in HEAD.values() if r[h].startswith("**")]
    assert sorted(bold) == ["AC+HW-JEPA", "FWM-HW-LD", "LD-JEPA"]
    assert all(r["Univ."] == "No" for n, r in rows.items() if n != "Baseline")


def test_table4_default_order_is_by_mean_delta(tmp_path: Path) -> None:
    table4_runs(tmp_path)
    labels = [r.label for r in table(tmp_path).rows]
    assert labels[:4] == ["Baseline", "FWM-HW-LD", "LD-JEPA", "FWM-JEPA"]
    assert labels[-1] == "FAC-JEPA"


def test_table3_arrows_missing_cells_and_univ(tmp_path: Path) -> None:
    table3_runs(tmp_path)
    t = table(tmp_path)
    assert t.baseline == "Baseline V-JEPA"
    _, rows = parse_markdown(render_markdown(t))
    assert len(rows) == len(TABLE3)
    for name, cells, univ in TABLE3:
        assert rows[name]["Univ."] == univ, name
        for bench, cell in zip(BENCHES, cells, strict=True):
            value, delta = rows[name][HEAD[bench]], rows[name][f"{HEAD[bench]} Δ"]
            if cell is None:
                assert (value, delta) == ("—", "—"), (name, bench)
                continue
            assert value.strip("*") == f"{cell[0]:.2f}"
            assert (delta.split()[-1] if cell[1] else delta) == (cell[1] or ""), (name, bench)
    assert rows["Motion-Guided"]["Diving-48 Δ"] == "+0.30 ↑"
    assert rows["Motion-Guided"]["ImageNet-100 Δ"] == "+0.14 ↑"
    assert rows["Motion-Guided"]["SSv2 Δ"] == "+1.38 ↑"
    assert DAGGER_NOTE not in t.notes


# --------------------------------------------------------------------------------------
# Seeds, grouping, intervals
# --------------------------------------------------------------------------------------


def seeded(tmp_path: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """FWM (seeds 0, 1, 2) and Baseline (seeds 0, 1): SSv2 clearly better, D-48 not."""
    fwm = {"ssv2": [10.0, 10.5, 11.2], "diving48": [5.0, 7.0, 6.0]}
    base = {"ssv2": [8.0, 8.3], "diving48": [6.5, 5.1]}
    for name, values in (("FWM", fwm), ("Baseline", base)):
        for seed in range(len(values["ssv2"])):
            device = {"device": "cuda" if seed else "cpu", "log_every": 10 + seed}
            make_run(
                tmp_path / f"{name}-s{seed}",
                name,
                {b: v[seed] for b, v in values.items()},
                seed=seed,
                train=device,
                data={"num_workers": seed},
            )
    return fwm, base


def test_seeds_group_into_rows_with_mean_std_n(tmp_path: Path) -> None:
    fwm, base = seeded(tmp_path)
    t = table(tmp_path)
    assert [r.label for r in t.rows] == ["Baseline", "FWM"]
    _, rows = parse_markdown(render_markdown(t))
    for name, values in (("FWM", fwm), ("Baseline", base)):
        for bench, v in values.items():
            want = f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f} ({len(v)})"
            assert rows[name][HEAD[bench]].strip("*") == want
    assert row(t, "FWM").seeds == [0, 1, 2]
    assert "FWM: 3 runs, seeds 0, 1, 2" in t.notes
    assert "Baseline: 2 runs, seeds 0, 1" in t.notes


def test_welch_interval_and_star(tmp_path: Path) -> None:
    fwm, base = seeded(tmp_path)
    t = table(tmp_path)
    _, rows = parse_markdown(render_markdown(t))
    for bench, excludes in (("ssv2", True), ("diving48", False)):
        a, b = fwm[bench], base[bench]
        va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
        delta = np.mean(a) - np.mean(b)
        lo, hi = delta - half, delta + half
        ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        assert (lo, hi) == pytest.approx((ref.low, ref.high))
        assert row(t, "FWM").cells[bench].ci95 == pytest.approx((lo, hi))
        assert bool(lo > 0 or hi < 0) is excludes
        arrow = "↑" if delta > 0 else "↓"
        want = f"{delta:+.2f} {arrow} [{lo:+.2f}, {hi:+.2f}]" + (" *" if excludes else "")
        assert rows["FWM"][f"{HEAD[bench]} Δ"] == want
    assert STAR_NOTE in t.notes


def test_zero_variance_gives_no_interval_and_no_star(tmp_path: Path) -> None:
    """Two probes each hitting the same 2.5-point step: no spread, so no (zero-width)
    interval and no claim that Δ excludes 0."""
    for seed in range(2):
        make_run(tmp_path / f"b{seed}", "Baseline", {"ssv2": 27.5}, seed=seed)
        make_run(tmp_path / f"x{seed}", "X", {"ssv2": 30.0}, seed=seed)
    cell = row(table(tmp_path), "X").cells["ssv2"]
    assert cell.ci95 is None and cell.no_spread and not cell.excludes_zero
    text = render_text(table(tmp_path))
    assert "+2.50 ↑" in text and "+2.50 ↑ [" not in text and " *" not in text
    assert "neither side varies" in text


def test_same_name_different_config_is_disambiguated(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "Baseline", {"ssv2": 8.0}, optim={"lr": 0.001})
    make_run(tmp_path / "b", "Baseline", {"ssv2": 9.0}, optim={"lr": 0.0005})
    t = table(tmp_path, baseline="Baseline (optim.lr=0.001)")
    labels = sorted(r.label for r in t.rows)
    assert labels == ["Baseline (optim.lr=0.0005)", "Baseline (optim.lr=0.001)"]
    assert row(t, "Baseline (optim.lr=0.0005)").cells["ssv2"].delta == pytest.approx(1.0)


def test_duplicate_seeds_still_group_with_a_warning(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "Baseline", {"ssv2": 8.0}, seed=3)
    make_run(tmp_path / "b", "Baseline", {"ssv2": 9.0}, seed=3)
    t = table(tmp_path)
    assert len(t.rows) == 1 and row(t, "Baseline").cells["ssv2"].n == 2
    assert any(n.startswith("warning: Baseline:") and "train.seed 3" in n for n in t.notes)


def test_zero_delta_has_no_arrow_and_no_minus_zero(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "Baseline", {"ssv2": 8.38})
    make_run(tmp_path / "b", "Same", {"ssv2": 8.38})
    make_run(tmp_path / "c", "Tiny", {"ssv2": 8.379})
    _, rows = parse_markdown(render_markdown(table(tmp_path)))
    assert rows["Same"]["SSv2 Δ"] == "+0.00"
    assert rows["Tiny"]["SSv2 Δ"] == "+0.00"
    assert rows["Same"]["Univ."] == "No"


# --------------------------------------------------------------------------------------
# Missing, broken and unreadable runs
# --------------------------------------------------------------------------------------


def test_missing_results_and_univ_dagger(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "Baseline", {"diving48": 8.0, "in100": 20.0, "ssv2": 8.0})
    make_run(tmp_path / "b", "Partial", {"diving48": 9.0, "in100": 21.0})
    make_run(tmp_path / "c", "Empty", {})
    t = table(tmp_path)
    _, rows = parse_markdown(render_markdown(t))
    assert rows["Partial"]["SSv2"] == "—" and rows["Partial"]["SSv2 Δ"] == "—"
    assert rows["Partial"]["Univ."] == "Yes†"
    assert DAGGER_NOTE in t.notes
    assert "Empty" not in rows
    assert t.no_results == [tmp_path / "c"]
    assert f"no results: {tmp_path / 'c'} (no probes/*.json)" in t.notes
    assert row(t, "Partial").cells["ssv2"].mean is None  # never 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            '{"bench": "ssv2", "top1": 8.',
            "probes/ssv2.json: invalid JSON (Expecting ',' delimiter: line 1 column 28",
        ),
        ("[1, 2]", "probes/ssv2.json: not a JSON object"),
        ('{"bench": "ssv2", "top1": "high"}', "probes/ssv2.json: no numeric 'top1'"),
        ('{"bench": "ssv2"}', "probes/ssv2.json: no numeric 'top1'"),
    ],
)
def test_broken_result_makes_the_run_unreadable(tmp_path: Path, text: str, reason: str) -> None:
    make_run(tmp_path / "a", "Baseline", {"ssv2": 8.0})
    make_run(tmp_path / "b", "Broken", {"in100": 20.0})
    (tmp_path / "b" / "probes" / "ssv2.json").write_text(text)
    make_run(tmp_path / "c", "Fine", {"ssv2": 9.0})
    t = table(tmp_path)
    assert [r.label for r in t.rows] == ["Baseline", "Fine"]
    assert [u.path for u in t.unreadable] == [tmp_path / "b"]
    assert t.unreadable[0].reason.startswith(reason)
    text_out = render_text(t)
    assert f"unreadable: {tmp_path / 'b'}: {reason}" in text_out


def test_run_without_config_is_unreadable_and_temp_files_are_ignored(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "Baseline", {"ssv2": 8.0})
    (tmp_path / "a" / "probes" / "in100.json.tmp").write_text("{trunc")
    (tmp_path / "a" / "probes" / ".ssv2.json.x1.tmp").write_text("{trunc")
    (tmp_path / "a" / "probes" / "notes.txt").write_text("hi")
    (tmp_path / "noconf" / "probes").mkdir(parents=True)
    runs, bad = collect_runs([str(tmp_path / "a"), str(tmp_path / "noconf")])
    assert [r.path for r in runs] == [tmp_path / "a"]
    assert list(runs[0].results) == ["ssv2"]
    assert [(u.path, u.reason) for u in bad] == [
        (tmp_path / "noconf", "no config.yaml (not a run directory)")
    ]


def test_globs_parent_dirs_and_unmatched_patterns(tmp_path: Path) -> None:
    make_run(tmp_path / "runs" / "synth" / "b", "B", {"ssv2": 1.0})
    make_run(tmp_path / "runs" / "synth" / "a", "A", {"ssv2": 2.0})
    make_run(tmp_path / "runs" / "mixed-x", "X", {"ssv2": 3.0})
    runs, bad = collect_runs([str(tmp_path / "runs" / "synth"), str(tmp_path / "runs/mix*")])
    assert [r.path.name for r in runs] == ["a", "b", "mixed-x"]
    assert not bad
    runs, _ = collect_runs([str(tmp_path / "runs" / "synth" / "*"), str(tmp_path / "runs/synth")])
    assert len(runs) == 2  # the same run twice is read once
    with pytest.raises(ConfigError, match=r"no run directory matches '.*nope\*'"):
        collect_runs([str(tmp_path / "runs" / "nope*")])
    with pytest.raises(ConfigError, match="no run directory matches"):
        collect_runs([str(tmp_path / "missing")])


# --------------------------------------------------------------------------------------
# Protocols and weights
# --------------------------------------------------------------------------------------


def test_mixed_protocols_are_flagged_and_weights_footnoted(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "Baseline", {"ssv2": 8.0, "in100": 20.0})
    make_run(
        tmp_path / "b",
        "Kin.-L1 (λ=1.0)",
        {
            "ssv2": result(
                "ssv2", 9.0, weights="student", hparams={"impl": "torch", "epochs": 100}
            ),
            "in100": result("in100", 21.0, weights="student"),
        },
    )
    t = table(tmp_path)
    header, _ = parse_markdown(render_markdown(t))
    assert "SSv2 ⚠" in header and "ImageNet-100" in header
    assert (
        "⚠ SSv2 mixes protocols: attentive probe, 50 epochs (Baseline); "
        "attentive probe, 100 epochs (Kin.-L1 (λ=1.0))"
    ) in t.notes
    assert "Probes: ImageNet-100: linear probe, 50 epochs." in t.notes
    assert "Weights: EMA teacher — Baseline; student — Kin.-L1 (λ=1.0)." in t.notes
    assert "SSv2 ⚠" in render_text(t)


def test_protocol_labels() -> None:
    def label(data: dict[str, Any]) -> str:
        return protocol_label(result_from_json(data, "test"))

    assert label(result("ssv2", 1.0)) == "attentive probe, 50 epochs"
    sk = result("in100", 1.0, hparams={"impl": "sklearn", "C": 1.0})
    assert label(sk) == "scikit-learn logistic regression"
    pooled = result("ssv2", 1.0, pooling="space2x2", protocol_name="reference", n_seeds=5)
    assert label(pooled) == (
        "attentive probe, 50 epochs, pooled space2x2, reference protocol, "
        "mean of 5 data/probe seeds"
    )  # results averaged over another number of seeds are flagged as another protocol
    assert label({"top1": 1.0}) == "unknown probe"


def test_synth_motion_uses_top1_and_orders_columns(tmp_path: Path) -> None:
    synth = result("synth-motion-mixed", 40.0, n_seeds=5, top1_std=2.0, protocol_name="default")
    make_run(tmp_path / "a", "Baseline", {"synth-motion-mixed": synth, "zzz": 1.0, "ssv2": 2.0})
    synth = result("synth-motion-mixed", 45.5, n_seeds=5, top1_std=1.0, protocol_name="default")
    make_run(tmp_path / "b", "Kin", {"synth-motion-mixed": synth, "aaa": 3.0})
    t = table(tmp_path)
    assert [c.bench for c in t.columns] == ["ssv2", "synth-motion-mixed", "aaa", "zzz"]
    assert row(t, "Kin").cells["synth-motion-mixed"].delta == pytest.approx(5.5)
    header, _ = parse_markdown(render_markdown(t))
    assert "Synth. motion (mixed)" in header


# --------------------------------------------------------------------------------------
# Baseline selection, benches, sorting
# --------------------------------------------------------------------------------------


def test_baseline_selection(tmp_path: Path) -> None:
    table4_runs(tmp_path)
    runs, _ = collect_runs([str(tmp_path)])
    assert build_table(runs, baseline="fwm-jepa").baseline == "FWM-JEPA"
    assert build_table(runs, baseline="spectral").baseline == "Spectral-JEPA"
    t = build_table(runs, baseline="FWM-JEPA")
    assert t.rows[0].label == "FWM-JEPA" and t.rows[0].univ == ""
    assert row(t, "Baseline").cells["in100"].delta == pytest.approx(24.86 - 26.74)
    assert build_table(runs, baseline="ld-jepa").baseline == "LD-JEPA"  # exact beats substring
    with pytest.raises(ConfigError, match="matches several rows"):
        build_table(runs, baseline="jepa")
    with pytest.raises(ConfigError, match="matches several rows"):
        build_table(runs, baseline="hw")
    with pytest.raises(ConfigError, match=r"did you mean 'Baseline'\?; rows: Baseline; "):
        build_table(runs, baseline="Basline")


def test_no_or_ambiguous_default_baseline_drops_deltas(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "Baseline", {"ssv2": 8.0}, optim={"lr": 0.001})
    make_run(tmp_path / "b", "Baseline", {"ssv2": 9.0}, optim={"lr": 0.0005})
    make_run(tmp_path / "c", "Other", {"ssv2": 7.0})
    t = table(tmp_path)
    assert t.baseline is None
    header, rows = parse_markdown(render_markdown(t))
    assert header == ["Method", "SSv2"]
    assert any("several rows could be the baseline" in n and "--baseline" in n for n in t.notes)
    assert rows["Baseline (optim.lr=0.001)"]["SSv2"] == "8.00"
    with pytest.raises(ConfigError, match="--baseline"):
        plot_deltas(t, tmp_path / "f.png")
    (tmp_path / "a" / "config.yaml").unlink()
    (tmp_path / "b" / "config.yaml").unlink()
    t = table(tmp_path)
    assert any("no row is named like a baseline" in n for n in t.notes)


def test_bench_selection(tmp_path: Path) -> None:
    table4_runs(tmp_path)
    runs, _ = collect_runs([str(tmp_path)])
    t = build_table(runs, benches=["ssv2", "diving48"])
    header, _ = parse_markdown(render_markdown(t))
    assert header == ["Method", "SSv2", "Δ", "Diving-48", "Δ", "Univ."]
    with pytest.raises(ConfigError, match="did you mean 'ssv2'"):
        build_table(runs, benches=["ssv"])


def test_sort_modes(tmp_path: Path) -> None:
    make_run(tmp_path / "z", "Zeta", {"ssv2": 9.0, "in100": 1.0})  # mean Δ (1 - 9) / 2 = -4
    make_run(tmp_path / "a", "Alpha", {"ssv2": 7.0})  # -1
    make_run(tmp_path / "m", "Baseline", {"ssv2": 8.0, "in100": 10.0})
    make_run(tmp_path / "b", "Beta", {"ucf101": 3.0})  # no Δ
    make_run(tmp_path / "c", "Gamma", {"in100": 13.0})  # +3
    patterns = [str(tmp_path / d) for d in ("z", "a", "m", "b", "c")]
    runs, _ = collect_runs(patterns)
    order = {
        s: [r.label for r in build_table(runs, sort=s).rows] for s in ("delta", "name", "input")
    }
    assert order["delta"] == ["Baseline", "Gamma", "Alpha", "Zeta", "Beta"]
    assert order["name"] == ["Baseline", "Alpha", "Beta", "Gamma", "Zeta"]
    assert order["input"] == ["Baseline", "Zeta", "Alpha", "Beta", "Gamma"]
    assert row(build_table(runs), "Beta").univ == "—"
    with pytest.raises(ConfigError, match="unknown sort"):
        build_table(runs, sort="size")


# --------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------


def test_text_is_aligned(tmp_path: Path) -> None:
    table4_runs(tmp_path)
    out = render_text(table(tmp_path))
    lines = out.splitlines()
    assert lines[0].startswith("Method") and set(lines[1]) <= {"-", " "}
    body = lines[2:17]
    assert len({len(ln) for ln in [lines[1], *[b for b in body if b.endswith("No")]]}) == 1
    assert "**" not in out
    assert "-16.28 ↓" in out


def test_csv_and_json_carry_the_numbers(tmp_path: Path) -> None:
    seeded(tmp_path)
    t = table(tmp_path)
    records = list(csv.DictReader(io.StringIO(render_csv(t))))
    assert [r["method"] for r in records] == ["Baseline", "FWM"]
    fwm, base = records[1], records[0]
    assert fwm["ssv2_n"] == "3" and float(fwm["ssv2_mean"]) == pytest.approx(
        np.mean([10, 10.5, 11.2])
    )
    assert float(fwm["ssv2_delta"]) == pytest.approx(np.mean([10, 10.5, 11.2]) - 8.15)
    assert float(fwm["ssv2_ci_lo"]) > 0
    assert base["ssv2_delta"] == "" and base["baseline"] == "1"
    doc = json.loads(render_json(t))
    assert doc["baseline"] == "Baseline"
    cell = doc["rows"][1]["cells"]["ssv2"]
    assert cell["values"] == [10.0, 10.5, 11.2] and cell["seeds"] == [0, 1, 2]
    assert cell["excludes_zero"] is True and len(cell["ci95"]) == 2
    assert doc["rows"][1]["cells"]["diving48"]["excludes_zero"] is False
    assert [c["bench"] for c in doc["columns"]] == ["diving48", "ssv2"]
    assert STAR_NOTE in doc["notes"]


def test_markdown_escapes_leading_footnote_markers(tmp_path: Path) -> None:
    seeded(tmp_path)
    md = render_markdown(table(tmp_path))
    assert "- \\* 95% interval excludes 0" in md
    assert md.splitlines()[len(md.split("\n\n")[0].splitlines())] == ""


# --------------------------------------------------------------------------------------
# Figure 2
# --------------------------------------------------------------------------------------


def test_plot_table4(tmp_path: Path) -> None:
    table4_runs(tmp_path / "runs")
    t = table(tmp_path / "runs")
    assert highlight_row(t).label == "FWM-HW-LD"
    assert highlight_row(t, "ld-jepa").label == "LD-JEPA"
    out = plot_deltas(t, tmp_path / "fig" / "fig2.png")
    assert out == tmp_path / "fig" / "fig2.png"
    assert png_size(out) == (1500, 675)
    assert [p.name for p in out.parent.iterdir()] == ["fig2.png"]  # no temp file left
    # As readable as a plainly created file (the temp file behind it was private).
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~current_umask()
    with pytest.raises(ConfigError, match="did you mean"):
        plot_deltas(t, tmp_path / "x.png", highlight="FWM-HW-LX")


def test_plot_with_intervals(tmp_path: Path) -> None:
    seeded(tmp_path / "runs")
    out = plot_deltas(table(tmp_path / "runs"), tmp_path / "f.png", highlight="FWM")
    assert png_size(out) == (1500, 675)


# --------------------------------------------------------------------------------------
# Untrained controls (issue 15, rough edge 1)
# --------------------------------------------------------------------------------------


def stepped(bench: str, top1: float, step: int) -> dict[str, Any]:
    return result(bench, top1, checkpoint={"path": "x.pt", "step": step, "sha256": "0" * 64})


def test_untrained_control_gets_its_own_row_not_a_seed(tmp_path: Path) -> None:
    """``pretrain --max-steps 0`` with the baseline's recipe and seed: a row of its own,
    labelled untrained, never grouped with (or chosen as) the baseline."""
    make_run(tmp_path / "b0", "Baseline", {"ssv2": stepped("ssv2", 8.0, 300)}, seed=0)
    make_run(tmp_path / "b1", "Baseline", {"ssv2": stepped("ssv2", 9.0, 300)}, seed=1)
    make_run(tmp_path / "u0", "Baseline", {"ssv2": stepped("ssv2", 5.0, 0)}, seed=0)
    t = table(tmp_path)
    assert sorted(r.label for r in t.rows) == ["Baseline", "Baseline (untrained)"]
    base, control = row(t, "Baseline"), row(t, "Baseline (untrained)")
    assert base.is_baseline and base.cells["ssv2"].n == 2 and base.cells["ssv2"].mean == 8.5
    assert control.untrained and control.cells["ssv2"].values == [5.0]
    assert control.cells["ssv2"].delta == pytest.approx(-3.5)
    assert not any("share train.seed" in n for n in t.notes)
    assert any(n.startswith("Baseline (untrained): an untrained control") for n in t.notes)
    assert json.loads(render_json(t))["rows"][1]["untrained"] is True


def test_results_without_a_step_count_as_trained(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "Baseline", {"ssv2": 8.0}, seed=0)
    make_run(tmp_path / "b", "Baseline", {"ssv2": stepped("ssv2", 9.0, 10)}, seed=1)
    t = table(tmp_path)
    assert [r.label for r in t.rows] == ["Baseline"] and not t.rows[0].untrained


# --------------------------------------------------------------------------------------
# Probe kinds (issue 15, rough edge 2)
# --------------------------------------------------------------------------------------


def write_probe(run: Path, name: str, data: dict[str, Any], mtime: float | None = None) -> None:
    path = run / "probes" / f"{name}.json"
    path.write_text(json.dumps(data))
    if mtime is not None:
        import os

        os.utime(path, (mtime, mtime))


def kinds_runs(root: Path) -> None:
    """A run probed three ways (new names), and an old run with probes/ssv2.json."""
    new = make_run(root / "new", "Method", {})
    write_probe(new, "ssv2-attentive", result("ssv2", 10.0))
    write_probe(new, "ssv2-linear", result("ssv2", 4.0, probe="linear"))
    swept = result("ssv2", 12.0, sweep={"selected": {"lr": 1e-3, "wd": 0.0}})
    write_probe(new, "ssv2-attentive-sweep", swept)
    make_run(root / "old", "Baseline", {"ssv2": 8.0})  # the old name, an attentive probe


def test_probe_kinds_are_columns_of_one_kind_default_the_tasks(tmp_path: Path) -> None:
    kinds_runs(tmp_path)
    t = table(tmp_path)
    assert [(c.bench, c.kind) for c in t.columns] == [("ssv2", "attentive")]
    assert row(t, "Method").cells["ssv2"].values == [10.0]
    assert row(t, "Baseline").cells["ssv2"].values == [8.0]  # the old file name still reads
    note = next(n for n in t.notes if n.startswith("Probe kind:"))
    assert "SSv2 attentive (also in these runs: linear, attentive-sweep)" in note
    assert "--probe" in note
    assert json.loads(render_json(t))["columns"][0]["kind"] == "attentive"


def test_probe_option_chooses_the_kind(tmp_path: Path) -> None:
    kinds_runs(tmp_path)
    t = table(tmp_path, probe=["linear"])
    assert t.columns[0].kind == "linear"
    assert row(t, "Method").cells["ssv2"].values == [4.0]
    assert row(t, "Baseline").cells["ssv2"].mean is None  # no linear probe: —, never another kind
    t = table(tmp_path, probe=["ssv2=attentive-sweep"])
    assert row(t, "Method").cells["ssv2"].values == [12.0]
    assert any("lr x wd sweep" in n for n in t.notes)
    with pytest.raises(ConfigError, match="did you mean 'linear'"):
        table(tmp_path, probe=["linaer"])
    with pytest.raises(ConfigError, match=r"no run has a linear-sklearn probe result for ssv2"):
        table(tmp_path, probe=["linear-sklearn"])
    with pytest.raises(ConfigError, match="no run has results for 'sv2'"):
        table(tmp_path, probe=["sv2=linear"])


def test_same_task_and_kind_twice_shows_the_newer_with_a_note(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", "Baseline", {})
    write_probe(run, "ssv2", result("ssv2", 8.0), mtime=1_000_000)
    write_probe(run, "ssv2-attentive", result("ssv2", 9.0), mtime=2_000_000)
    t = table(tmp_path)
    assert row(t, "Baseline").cells["ssv2"].values == [9.0]
    assert any("showing the newer, ssv2-attentive.json" in n for n in t.notes)


def test_limit_is_in_the_protocol_footnote(tmp_path: Path) -> None:
    """Issue 15, rough edge 6: a demo-sized (--limit) result says so under the table."""
    limited = result(
        "ssv2", 9.0, protocol={"train": {"limit": 24}, "val": {"limit": 24}}, n_train=24, n_val=24
    )
    make_run(tmp_path / "a", "Baseline", {"ssv2": limited})
    t = table(tmp_path)
    assert "Probes: SSv2: attentive probe, 50 epochs, --limit 24 (24 train / 24 val clips)." in (
        t.notes
    )
    full = result("ssv2", 9.0, protocol={"train": {"limit": None}, "val": {"limit": None}})
    assert "--limit" not in protocol_label(result_from_json(full, "test"))

"""``jepactl plot``: a run's curves against step, several runs in one PNG.

Reads only ``metrics.jsonl`` and ``config.yaml`` (no torch). Panels: the training loss,
RankMe of the monitored features, and the online-probe accuracy, each run one colour. The
probe panel draws the run's step-0 accuracy (the untrained encoder) as a dotted line and the
raw-pixel accuracy as a dashed one, so a curve that never leaves them says pretraining has
not (yet) taught the probe anything.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jepactl.errors import ConfigError
from jepactl.report.grouping import method_key
from jepactl.rundir import RunDir
from jepactl.stats import summarize
from jepactl.train.metrics import (
    LOSS,
    PROBE_CHANCE,
    PROBE_KNN,
    PROBE_LINEAR,
    RANKME,
    STEP,
    is_control,
    is_probe,
    pixel_control,
    read_metrics,
)
from jepactl.utils import atomic_write_bytes

#: Panels: (metrics line name, y label), in order.
PANELS: dict[str, str] = {
    LOSS: "training loss",
    RANKME: "RankMe (pooled features)",
    PROBE_LINEAR: "online probe: logistic regression, top-1 (%)",
    PROBE_KNN: "online probe: k-NN, top-1 (%)",
}
DEFAULT_PANELS = (LOSS, RANKME, PROBE_LINEAR)
#: The step-0 line's accuracy of guessing on the monitor task (%).
CHANCE = PROBE_CHANCE
#: The panels that need the monitor (monitor.every > 0).
MONITORED = (RANKME, PROBE_LINEAR, PROBE_KNN)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


@dataclass
class Curves:
    """One run's logged series: ``series[key]`` is a list of (step, value)."""

    label: str
    group: str = ""
    folder: str = ""
    #: The run's config without its seed and runtime keys: runs with the same key are seeds of
    #: one method (as in ``compare``), however they are named.
    config_key: str = ""
    seed: int | None = None
    monitor: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    controls: dict[str, float] = field(default_factory=dict)

    def at(self, key: str, step: int) -> float | None:
        return next((v for s, v in self.series.get(key, []) if s == step), None)

    def last(self, key: str) -> tuple[int, float] | None:
        points = self.series.get(key, [])
        return max(points) if points else None


def read_curves(run_dir: Path) -> Curves:
    """A run's curves; a :class:`ConfigError` when it has no readable ``metrics.jsonl``, a
    :class:`~jepactl.formats.NewerFormatError` when a newer jepactl wrote one of its lines."""
    run = RunDir(run_dir)
    if not run.metrics.is_file():
        raise ConfigError(f"{run_dir} has no {run.metrics.name}; is it a run directory?")
    label = group = run.root.name
    seed: int | None = None
    monitor: dict[str, Any] = {}
    cfg: Any = None
    if run.config.is_file():
        try:
            cfg = run.read_config()
        except (OSError, yaml.YAMLError):
            cfg = None  # the label falls back to the folder name
        if isinstance(cfg, dict):
            seed = (cfg.get("train") or {}).get("seed")
            monitor = cfg.get("monitor") or {}
            if cfg.get("display_name"):
                group = str(cfg["display_name"])
                label = f"{group} (seed {seed}, {run.root.name})"
    curves = Curves(label, group, run.root.name, _config_key(cfg, run.root), seed, monitor)
    for line in read_metrics(run.metrics):
        for name, value in line.numbers().items():
            if is_control(name):
                curves.controls[name] = float(value)
            elif math.isfinite(value):
                curves.series.setdefault(name, []).append((line.step, float(value)))
    return curves


def _config_key(cfg: Any, root: Path) -> str:
    if not isinstance(cfg, dict):
        return str(root)  # unreadable config: a method of its own
    return method_key(cfg)  # as `compare` groups seeds


def plot_curves(
    curves: Sequence[Curves], path: Path, panels: Sequence[str] = DEFAULT_PANELS
) -> Path:
    """Draw ``panels`` (names of ``metrics.jsonl``'s lines) against step for every run's curves
    (:func:`read_curves`); PNG, atomic."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ConfigError("no runs to plot")
    for key in panels:
        if not any(c.series.get(key) for c in curves):
            known = sorted({k for c in curves for k in c.series if k != STEP})
            raise ConfigError(
                f"no run logged '{key}'"
                + (
                    "; online-probe and RankMe curves need monitor.every > 0 in the recipe"
                    if key in MONITORED
                    else ""
                )
                + f" (logged: {', '.join(known[:12])})"
            )
    groups = {c.group for c in curves}
    one_method = len(groups) == 1 and len(curves) > 1
    rows = math.ceil(len(curves) / 3)
    fig = Figure(figsize=(4.2 * len(panels), 3.6 + 0.25 * rows), dpi=150)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, key in zip(axes, panels, strict=True):
        for i, c in enumerate(curves):
            colour = COLOURS[i % len(COLOURS)]
            points = c.series.get(key, [])
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            label = f"seed {c.seed} ({c.folder})" if one_method else c.label
            ax.plot(steps, values, color=colour, label=label if ax is axes[0] else None, lw=1.4)
            if is_probe(key):
                _controls(ax, c, key, points, colour)
        ax.set_xlabel("step")
        ax.set_title(PANELS.get(key, key), fontsize=9)
        ax.grid(alpha=0.3)
    if one_method:
        fig.suptitle(next(iter(groups)), fontsize=10)
    fig.legend(loc="lower center", ncol=min(len(curves), 3), fontsize=7, frameon=False)
    if any(is_probe(k) for k in panels):
        fig.text(
            0.995, 0.005, "probe panels: dotted = step 0 (untrained), dashed = raw pixels, "
            "grey = chance", ha="right", va="bottom", fontsize=6,
        )  # fmt: skip
    fig.tight_layout(rect=(0, 0.07 * rows, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), lambda f: f.write(buf.getvalue()))
    return Path(path)


def _controls(
    ax: Any, curves: Curves, key: str, points: list[tuple[int, float]], colour: str
) -> None:
    at_zero = [v for s, v in points if s == 0]
    if at_zero:
        ax.axhline(at_zero[0], color=colour, ls=":", lw=1)
    pixels = curves.controls.get(pixel_control(key))
    if pixels is not None:
        ax.axhline(pixels, color=colour, ls="--", lw=1, alpha=0.7)
    chance = curves.controls.get(CHANCE)
    if chance is not None:
        ax.axhline(chance, color="0.6", ls="-", lw=0.8)


def learning_summary(curves: Sequence[Curves], key: str = PROBE_LINEAR) -> str:
    """What pretraining taught the online probe: per method (runs grouped by display name,
    seeds as repeats), the accuracy at the last logged step, at step 0 (the same encoder
    untrained) and on raw pixels, and the paired differences, as mean ± 95 % t interval."""
    by_config: dict[str, list[Curves]] = {}
    for c in curves:
        if c.last(key) is not None:
            by_config.setdefault(c.config_key, []).append(c)
    groups: dict[str, list[Curves]] = {}
    for runs in by_config.values():
        name = runs[0].group
        if name in groups:  # same display name, different settings: tell them apart
            name = f"{name} [{runs[0].label.rsplit(', ', 1)[-1].rstrip(')')}]"
        groups[name] = runs
    if not groups:
        return f"no run logged '{key}' (the monitor is off: set monitor.every > 0)\n"

    def cell(values: list[float], signed: bool = False) -> str:
        if not values:
            return "—"
        s = summarize(values)
        sign = "+" if signed else ""
        if s["ci95"] is None:
            return f"{s['mean']:{sign}.1f} (n=1)"
        if s["std"] == 0:  # e.g. the pixel control: one fixed set, the same for every seed
            return f"{s['mean']:{sign}.1f} (every run)"
        lo, hi = s["ci95"]
        return f"{s['mean']:{sign}.1f} [{lo:{sign}.1f}, {hi:{sign}.1f}]"

    header = ["Method", "seeds", "last step", "trained", "untrained (step 0)", "raw pixels",
              "trained − untrained", "trained − pixels"]  # fmt: skip
    rows, verdicts = [], []
    for name, runs in groups.items():
        trained, untrained, pixels, steps = [], [], [], set()
        for c in runs:
            step, value = c.last(key) or (0, 0.0)  # every run in groups logged key
            trained.append(value)
            steps.add(step)
            untrained.append((value, c.at(key, 0)))
            pixels.append((value, c.controls.get(pixel_control(key))))
        vs_init = [(t, z) for t, z in untrained if z is not None]
        vs_pixels = [(t, p) for t, p in pixels if p is not None]
        rows.append([
            name, str(len(runs)), "/".join(map(str, sorted(steps))), cell(trained),
            cell([z for _, z in vs_init]), cell([p for _, p in vs_pixels]),
            cell([t - z for t, z in vs_init], signed=True),
            cell([t - p for t, p in vs_pixels], signed=True),
        ])  # fmt: skip
        verdicts.append(f"{name}: {verdict([t - z for t, z in vs_init])}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, ["-" * w for w in widths], *rows]
    ]
    monitor = next((c.monitor for c in curves if c.monitor), {})
    what = PANELS.get(key, key).replace(", top-1 (%)", "").replace("online probe: ", "")
    chance = next((c.controls[CHANCE] for c in curves if CHANCE in c.controls), None)
    intro = (
        f"Online probe ({what}) on the monitor task '{monitor.get('task', '?')}', "
        f"{monitor.get('pool', '?')}-pooled features, {monitor.get('clips', '?')} clips "
        "(half fit, half scored"
        + (f"; chance {chance:.1f} %" if chance else "")
        + "): top-1 %, mean [95 % t interval] over seeds; differences are paired by run."
    )
    return intro + "\n\n" + "\n".join([*lines, "", *verdicts]) + "\n"


def verdict(gains: list[float]) -> str:
    """One line on paired gains over the untrained encoder: learned, worse, or cannot tell."""
    if len(gains) < 2:
        return "one seed has no interval; run 3 or more seeds (--seed) to tell learning from noise"
    s = summarize(gains)
    lo, hi = s["ci95"]
    if lo > 0:
        return "beats its untrained encoder (the 95 % interval of the gain is above 0)"
    if hi < 0:
        return "worse than its untrained encoder (the 95 % interval of the gain is below 0)"
    return (
        "cannot be told from its untrained encoder (the interval contains 0): train longer "
        "or run more seeds"
    )

"""Table 6's shape: the synthetic motion results of several runs as one table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jepactl.features.synth_motion import Protocol, get_protocol
from jepactl.probe.records import SynthMotionResult
from jepactl.report.notes import WEIGHTS_NAMES
from jepactl.rundir import RunDir


def run_label(run_dir: Path) -> str:
    """The run's display name (from ``config.yaml``), else its folder name."""
    import yaml

    try:
        config = RunDir(run_dir).read_config() or {}
        name = str(config.get("display_name") or "")
    except (OSError, yaml.YAMLError, AttributeError):
        name = ""
    return name or Path(run_dir).name


def format_cell(result: SynthMotionResult) -> str:
    """``61.25`` for one seed; ``61.25 ± 3.10 (3) [53.55, 68.95]`` for several."""
    cell = f"{result.top1:.2f}"
    if result.n_seeds > 1 and result.top1_std is not None and result.top1_ci95 is not None:
        lo, hi = result.top1_ci95
        cell += f" ± {result.top1_std:.2f} ({result.n_seeds}) [{lo:.2f}, {hi:.2f}]"
    return cell


def format_table(
    rows: Sequence[tuple[str, SynthMotionResult]],
    task: str,
    protocol: str | Protocol,
    markdown: bool = False,
) -> str:
    """Table 6's shape: ``Method | Accuracy (%)``, with a caption line and a footnote."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    n_seeds = max((r.n_seeds for _, r in rows), default=1)
    what = (
        "8 translation directions (N, NE, E, SE, S, SW, W, NW)"
        if task == "directions"
        else "8 classes over translation, rotation and scaling"
    )
    caption = (
        f"Synthetic motion, {task}: {what}; {proto.describe()}; "
        f"{n_seeds} seed{'s' if n_seeds > 1 else ''}; chance 12.5%."
    )
    header = ("Method", "Accuracy (%)")
    body = [(label, format_cell(r)) for label, r in rows]
    names = {r.weights for _, r in rows}
    weights = sorted(WEIGHTS_NAMES.get(w, w) for w in names)
    foot = f"Weights: {', '.join(weights)}."
    if n_seeds > 1:
        foot += " Cells: mean ± std (seeds) [95% t-interval of the mean]."
    if markdown:
        lines = [caption, "", f"| {header[0]} | {header[1]} |", "|---|---:|"]
        lines += [f"| {a} | {b} |" for a, b in body]
        return "\n".join([*lines, "", foot])
    width = max(len(header[0]), *(len(a) for a, _ in body))
    lines = [caption, "", f"{header[0]:<{width}}  {header[1]}", "-" * (width + 2 + 12)]
    lines += [f"{a:<{width}}  {b}" for a, b in body]
    return "\n".join([*lines, "", foot])

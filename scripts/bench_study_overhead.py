"""What the local launcher adds to a study's wall time, against the same stages run by hand.

Each round runs one small synthetic study twice into fresh roots, in alternating order:
``jepactl study run --launcher local --max-parallel 1``, and every stage's command line
(``build_stages``) one after the other with ``python -m jepactl``, as a person would type
them. Prints the wall times per round and the ratio of the medians.

    python scripts/bench_study_overhead.py --rounds 3 [--study FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jepactl_tests"))
from studyfixtures import write_study

from jepactl.study.graph import build_stages
from jepactl.study.spec import load_study


def by_launcher(study_file: Path, root: Path) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "jepactl", "-q", "study", "run", str(study_file), "--root",
         str(root), "--max-parallel", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - t


def by_hand(study_file: Path, root: Path) -> float:
    study = load_study(str(study_file), root)
    t = time.perf_counter()
    for stage in build_stages(study):
        subprocess.run(
            [sys.executable, "-m", "jepactl", "-q", *stage.argv], check=True, capture_output=True
        )
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--study", type=Path, default=None, help="default: the tests' tiny study")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jepactl-bench-study-"))
    study_file = args.study or write_study(work / "study.yaml")
    stages = len(build_stages(load_study(str(study_file), work / "plan")))
    launcher: list[float] = []
    hand: list[float] = []
    try:
        for r in range(args.rounds):
            order = [("launcher", by_launcher), ("hand", by_hand)]
            if r % 2:
                order.reverse()
            for name, fn in order:
                root = work / f"{name}-{r}"
                seconds = fn(study_file, root)
                (launcher if name == "launcher" else hand).append(seconds)
                print(f"round {r}: {name:<8} {seconds:7.1f} s", flush=True)
                shutil.rmtree(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = statistics.median(launcher) / statistics.median(hand)
    print(
        f"{stages} stages, {os.cpu_count()} CPUs: launcher median "
        f"{statistics.median(launcher):.1f} s, by hand {statistics.median(hand):.1f} s, "
        f"ratio {ratio:.3f}"
    )


if __name__ == "__main__":
    main()

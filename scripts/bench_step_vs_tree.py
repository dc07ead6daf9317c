"""This tree's training step, eager and compiled, against another tree's, interleaved.

Each variant is a worker process of its own (two trees cannot share one interpreter): it
imports jepactl from its tree, builds ``PreparedStep`` for the recipe (the same seed, so the
same weights and the same pre-rendered batch and masks), warms up (compiling, if asked), and
then times steps when told to. The parent tells them in turn, round after round, so drift on
a shared machine favours no variant; only one runs at a time.

    git worktree add /tmp/oldmain 1ca0a94
    python scripts/bench_step_vs_tree.py --other /tmp/oldmain --threads 1 [--rounds 10]

Prints one JSON object: per variant the median ms per step, and each median ratio to the
other tree's eager step (medians of the per-round ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
name, compiled, warmup = sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
from jepactl.bench import PreparedStep, _profiled
step = PreparedStep(name, _profiled(name, "synth"), torch.device("cpu"))
t0 = time.perf_counter()
if compiled:
    step.model.losses = torch.compile(step.model.losses, dynamic=False)
step()
first = time.perf_counter() - t0
for _ in range(warmup):
    step()
print(json.dumps({"first_step_s": first, "jepactl": __import__("jepactl").__file__}), flush=True)
for line in sys.stdin:
    times = step.timed(int(line))
    print(json.dumps(times), flush=True)
"""


def start(tree: Path, threads: int, name: str, compiled: bool, warmup: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    args = [sys.executable, "-c", WORKER, str(threads), name, "1" if compiled else "0", str(warmup)]
    return subprocess.Popen(
        args, env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="the tree to compare with")
    parser.add_argument("--recipe", default="synth/baseline")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round and variant")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    variants = {
        "other-eager": (args.other.resolve(), False),
        "eager": (HERE, False),
        "compiled": (HERE, True),
    }
    workers, first = {}, {}
    for key, (tree, compiled) in variants.items():  # one at a time: compiling takes both cores
        proc = start(tree, args.threads, args.recipe, compiled, args.warmup)
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        workers[key], first[key] = proc, ready
    times: dict[str, list[float]] = {k: [] for k in variants}
    ratios: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        medians = {}
        for key, proc in workers.items():
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{args.steps}\n")
            proc.stdin.flush()
            got = json.loads(proc.stdout.readline())
            times[key] += got
            medians[key] = statistics.median(got)
        for key in variants:
            ratios[key].append(medians[key] / medians["other-eager"])
    for proc in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    import torch

    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"),
        "recipe": args.recipe,
        "threads": args.threads,
        "torch": torch.__version__,
        "other": str(args.other),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "variants": {
            key: {
                "ms_per_step": 1000 * statistics.median(times[key]),
                "ratio_to_other_eager": statistics.median(ratios[key]),
                "first_step_s": first[key]["first_step_s"],
                "jepactl": first[key]["jepactl"],
            }
            for key in variants
        },
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

"""The synth/baseline step now vs as it was on main before issue 14, in one process.

"Before" swaps the two changed code paths back in the same model: timm's ``EvaAttention`` with
its sin/cos table instead of ``RopeAttention``, and one encoder pass (and patch embedding) per
mask group instead of ``VideoViT.forward_groups``. Rounds alternate, so drift favours neither.

    python scripts/bench_step_vs_main.py [--rounds 12] [--steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from timm.models.eva import EvaAttention

from jepactl.bench import PreparedStep, _profiled
from jepactl.models.attention import RopeAttention
from jepactl.models.rope import RotaryEmbedding3D
from jepactl.models.vit import VideoViT

NEW_ROT, NEW_GROUPS = RotaryEmbedding3D.rotations, VideoViT.forward_groups


def old_rot(self: RotaryEmbedding3D, coords: torch.Tensor) -> torch.Tensor:
    return self.forward(coords)


def old_groups(self: VideoViT, x: torch.Tensor, keeps: Any) -> list[torch.Tensor]:
    return [self(x, keep=k) for k in keeps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = PreparedStep("synth/baseline", _profiled("synth/baseline", "synth"), torch.device("cpu"))
    attns = [m for m in p.model.modules() if isinstance(m, EvaAttention)]

    def use(before: bool) -> None:
        for m in attns:
            m.__class__ = EvaAttention if before else RopeAttention
        RotaryEmbedding3D.rotations = old_rot if before else NEW_ROT  # type: ignore[method-assign]
        VideoViT.forward_groups = old_groups if before else NEW_GROUPS  # type: ignore[method-assign]

    for before in (True, False):
        use(before)
        p()
        p()
    times: dict[bool, list[float]] = {True: [], False: []}
    ratios = []
    for _ in range(args.rounds):
        pair = {}
        for before in (True, False):
            use(before)
            t = p.timed(args.steps)
            times[before] += t
            pair[before] = statistics.median(t)
        ratios.append(pair[False] / pair[True])
    old, new = statistics.median(times[True]), statistics.median(times[False])
    print(f"before {1000 * old:.0f} ms, now {1000 * new:.0f} ms, ratio {new / old:.3f}")
    print(
        f"per-round ratios {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}"
    )


if __name__ == "__main__":
    main()

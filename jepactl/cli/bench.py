"""``jepactl bench ...``: the benchmarks (:mod:`jepactl.bench`). Timings are measured here,
never asserted in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepactl.cli.common import (
    DEVICE_HELP,
    TASK_HELP,
    BenchDevice,
    CompileVariants,
    Size,
    fail,
    torch_threads,
)
from jepactl.log import LOGGER

app = typer.Typer(help="Benchmarks (timings are measured, never asserted in tests).")


@app.command("step-time")
def bench_step_time(
    recipes: Annotated[
        list[str] | None, typer.Argument(help="Recipe names or globs (default: all).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Timed steps per recipe.")] = 8,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 3,
    device: Annotated[BenchDevice, typer.Option(help="The device to time.")] = BenchDevice.cpu,
    size: Annotated[
        Size, typer.Option(help="synth: CPU-sized (recipes/base/synth.yaml); paper: as written.")
    ] = Size.synth,
    check_syncs: Annotated[
        bool, typer.Option(help="CUDA: fail if a timed step synchronises with the host.")
    ] = False,
    write: Annotated[
        Path | None,
        typer.Option(help="Also write the table into this Markdown file's step-time section."),
    ] = None,
) -> None:
    """Step time of each recipe at the synthetic CPU size, relative to synth/baseline."""
    import datetime
    import platform

    from jepactl.bench import markdown, step_times
    from jepactl.utils import write_section

    rows = step_times(recipes or ["*"], steps, warmup, device.value, size.value, check_syncs)
    if device is BenchDevice.cuda:
        import torch

        where = torch.cuda.get_device_name()
    else:
        where = f"{platform.processor() or platform.machine()} ({torch_threads()} threads)"
    header = (
        f"Measured {datetime.date.today()} on {where} at the {size.value} size, median of {steps} "
        f"steps after {warmup} warm-up steps, bf16 autocast on CUDA and fp32 on CPU (unless a "
        "recipe sets train.precision), one pre-rendered batch"
        + (", no host synchronisation inside any timed step." if check_syncs else ".")
    )
    text = markdown(rows, header)
    typer.echo(text)
    if write is not None:
        write_section(write, "step-time", text)


@app.command("pretrain")
def bench_pretrain(
    recipe: Annotated[
        list[str] | None,
        typer.Option(help="Recipe to time (repeatable; the first is the reference)."),
    ] = None,
    size: Annotated[
        Size, typer.Option(help="synth: CPU-sized (recipes/base/synth.yaml); paper: as written.")
    ] = Size.synth,
    device: Annotated[BenchDevice, typer.Option(help="The device to time.")] = BenchDevice.cpu,
    steps: Annotated[int, typer.Option(help="Timed steps per recipe and round.")] = 3,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds over the recipes.")] = 3,
    warmup: Annotated[
        int, typer.Option(help="Untimed steps per recipe, all before any timing.")
    ] = 2,
    loader_steps: Annotated[
        int, typer.Option(help="Steps of the real-loader run that measures data wait (0: skip).")
    ] = 20,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every figure to this JSON file.")
    ] = None,
    compile_steps: Annotated[
        CompileVariants,
        typer.Option(
            "--compile",
            help="Time the eager step, the compiled one (as train.compile; its first step, "
            "compilation included, is reported), or both.",
        ),
    ] = CompileVariants.off,
) -> None:
    """Step time, FLOPs and MFU of each recipe, against this machine's measured ceiling.
    One process measures the dense matrix-product rate at the training dtype (the ceiling),
    warms every recipe up, then times them in interleaved rounds (so warm-up and drift do not
    favour one), counts the FLOPs of a step (matrix products, convolutions, attention; forward
    and backward), and runs a real `pretrain` from synthetic clips written as video files for
    the data-wait fraction. Example:
    `jepactl bench pretrain --recipe synth/baseline --recipe synth/fwm_hw_ld --json perf.json`.
    """
    import json

    from jepactl.bench import BASELINE_FOR_SIZE, pretrain_bench, pretrain_markdown
    from jepactl.utils import atomic_write_bytes

    names = recipe or [BASELINE_FOR_SIZE[size.value]]
    if min(steps, rounds) < 1 or min(warmup, loader_steps) < 0:
        fail("--steps and --rounds must be >= 1, --warmup and --loader-steps >= 0")

    result = pretrain_bench(
        names, size.value, device.value, steps, rounds, warmup, loader_steps, LOGGER.info,
        compile_steps.variants(),
    )  # fmt: skip
    typer.echo(pretrain_markdown(result), nl=False)
    if json_out is not None:
        data = (json.dumps(result, indent=2) + "\n").encode()
        atomic_write_bytes(json_out, lambda f: f.write(data))
        LOGGER.info(f"wrote {json_out}")


@app.command("decode")
def bench_decode(
    frames: Annotated[int, typer.Option(help="Length of the generated test video.")] = 300,
    size: Annotated[
        int, typer.Option(help="Frame height of the test video (width 4/3 of it).")
    ] = 240,
    clips: Annotated[int, typer.Option(help="Clips to decode per method.")] = 40,
    clip_len: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    stride: Annotated[int, typer.Option(help="Frame stride.")] = 2,
    short_side: Annotated[int, typer.Option(help="Resize while decoding.")] = 128,
) -> None:
    """Pretraining clip decoding (seek + decode only the clip) against decoding every frame
    from the start, on a generated H.264 video, in this process (one core)."""
    import tempfile

    import numpy as np

    from jepactl.data.decode import decode_benchmark
    from jepactl.data.synthetic import SyntheticVideoSource
    from jepactl.data.writer import write_video

    width = (size * 4 // 3) // 2 * 2
    video = SyntheticVideoSource(num_frames=frames, size=width, seed=0)[0].clip
    video = video[:, (width - size) // 2 : (width - size) // 2 + size]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "bench.mp4", np.ascontiguousarray(video.numpy()), gop=25)
        result = decode_benchmark(path, clip_len, stride, clips, short_side=short_side)
    typer.echo(
        f"{frames} frames {width}x{size} H.264 (keyframe every 25), {clips} clips of "
        f"{clip_len} frames at stride {stride}, short side {short_side}:"
    )
    typer.echo(
        f"  seek to the clip:        {result['seek_clips_per_s']:.1f} clips/s\n"
        f"  decode from the start:   {result['from_start_clips_per_s']:.1f} clips/s\n"
        f"  ratio:                   {result['speedup']:.2f}x"
    )


@app.command("probe")
def bench_probe(
    run: Annotated[Path, typer.Argument(help="A trained run directory.")],
    task: Annotated[str, typer.Option(help=TASK_HELP)] = "synth-shapes",
    epochs: Annotated[int, typer.Option(help="Probe epochs.")] = 50,
    limit: Annotated[int, typer.Option(help="Clips per split.")] = 400,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
) -> None:
    """Probe from the token cache vs the re-encode-every-epoch protocol: time and accuracy."""
    from jepactl.bench import probe_cache_vs_reencode

    r = probe_cache_vs_reencode(run, task, epochs, limit, device=device)
    typer.echo(
        f"{task}, {int(r['n_train'])} train / {int(r['n_val'])} val clips, {epochs} epochs:\n"
        f"  from the cache (extract once + probe): {r['cache_s']:.1f} s, "
        f"top-1 {r['cache_top1']:.1f}%\n"
        f"  re-encode every epoch:                  {r['reencode_s']:.1f} s, "
        f"top-1 {r['reencode_top1']:.1f}%\n"
        f"  ratio: {r['speedup']:.1f}x (majority-class floor {r['majority']:.1f}%)"
    )

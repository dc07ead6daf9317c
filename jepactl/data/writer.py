"""Writing clips as real video files with PyAV (benchmarks, synthetic benchmarks, fixtures)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch

#: Default codec per container suffix: the formats the paper's datasets ship in.
CODECS = {".avi": "mpeg4", ".webm": "libvpx-vp9", ".mp4": "libx264", ".mkv": "libx264"}


def write_video(
    path: Path,
    frames: torch.Tensor | np.ndarray,
    fps: int = 25,
    codec: str | None = None,
    gop: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` (even H and W) to ``path``.

    The codec follows the suffix (``.avi`` MPEG-4, ``.webm`` VP9, ``.mp4`` H.264) unless given;
    ``gop`` sets the keyframe interval, which decides how far a seek lands from its target;
    ``options`` go to the encoder (``{"crf": "23"}`` for libx264).
    """
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {array.dtype} {array.shape}")
    _, height, width, _ = array.shape
    if height % 2 or width % 2:
        raise ValueError(f"frame size {height}x{width} must be even for yuv420p codecs")
    codec = codec or CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no default codec for '{path.suffix}'; pass codec=")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps, options=dict(options or {}))
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"codec '{codec}' is not a video codec")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for frame in array:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

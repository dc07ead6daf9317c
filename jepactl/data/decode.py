"""Decode clips of real videos (AVI/MPEG-4, WebM/VP9, MP4/H.264, ...) with PyAV, fast and exactly.

Pretraining and evaluation read datasets directly, in DataLoader workers, at terabyte scale, so
a clip read has to cost roughly the frames it needs, not the whole video:

* :func:`read_frames` seeks once to the keyframe before the first needed frame, decodes forward
  only up to the last needed one, and converts to RGB only the frames it returns, resizing them
  inside that same libswscale call (``short_side``) so full-resolution RGB never exists;
* :func:`probe` reads container metadata (plus one keyframe, for the rotation);
* the samplers (:func:`pretrain_indices`, :func:`uniform_indices`) are pure functions of the
  frame count and an explicit generator, so a worker needs no state to reproduce a draw.

Frame numbering. Frame ``i`` of a video is the first frame, in presentation order, whose
timestamp is at or after ``start + (i - 1/2) / avg_fps``, where ``start`` is the timestamp of
the video's first frame and ``avg_fps`` its average frame rate. This is "the first frame at or
after ``start + i / avg_fps``" with half a frame period of slack, which absorbs timestamps
rounded to a coarse time base (WebM stores milliseconds, so at 29.97 fps frame 1 sits at 33 ms,
before 1/29.97 s). For a constant-rate video it is simply the ``i``-th frame; for a variable
frame rate video it resamples to the average rate, repeating a frame across a gap and skipping
frames where the rate runs above average. Streams without timestamps fall back to counting
decoded frames. ``start`` is taken from the first frame rather than from the container's
``start_time``, which is off by the B-frame delay in AVI files written with packed B-frames.

A video shorter than the clip repeats its last frame: indices past the last decodable frame
(including a file truncated after its header was written) return that frame.

Rotation. Phone videos store upright pictures as rotated coded frames plus a display matrix.
Returned frames are as displayed: :func:`read_frames` turns each frame by the rotation of its
display-matrix side data (``np.rot90`` on the small, already resized frame, so it costs nothing).

Threads. Decoding is single-threaded by default (``threads=1``: no FFmpeg thread pool at all),
and so is the RGB conversion always (PyAV's own default would start a libswscale pool per
frame). DataLoader workers already give one decode per core, and FFmpeg thread pools inside
forked workers can deadlock (PyAV#1962). Pass ``threads > 1`` only in a process that never
forks.

Errors. Any failure to open or decode a file raises :class:`DecodeError`, with the path in the
message, so a dataset can catch exactly that, log the path and substitute another sample.

Layout. Opening a file and reading its container (:class:`DecodeError`, :class:`VideoMeta`,
:func:`probe`) live in :mod:`jepactl.data.container`, the seek in :mod:`jepactl.data.seeking`
and the samplers in :mod:`jepactl.data.sampling`; this module reads clips and re-exports the
public names of the other three.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from itertools import chain
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from jepactl.data.container import (
    DecodeError,
    PathLike,
    VideoMeta,
    _frame_rate,
    _num_frames,
    _open,
    _rotation,
    _video_stream,
    probe,
)
from jepactl.data.sampling import (
    _check_positive,
    first_indices,
    pretrain_indices,
    uniform_indices,
)
from jepactl.data.seeking import (
    _first_pts,
    _NoTimestamps,
    _seek_frames,
    _SeekFailed,
    _worth_seeking,
)

__all__ = [
    "DecodeError",
    "VideoMeta",
    "decode_benchmark",
    "first_indices",
    "pretrain_indices",
    "probe",
    "read_clip",
    "read_frames",
    "read_image",
    "uniform_indices",
]


# --------------------------------------------------------------------------- reading clips


def _validate_indices(indices: Sequence[int]) -> list[int]:
    try:
        wanted = [operator.index(i) for i in indices]
    except TypeError as err:
        raise ValueError(f"frame indices must be integers: {err}") from err
    if not wanted:
        raise ValueError("indices must not be empty")
    if min(wanted) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(wanted)}")
    return wanted


def _output_size(
    width: int, height: int, short_side: int | None, upscale: bool = True
) -> tuple[int, int]:
    """``(width, height)`` with the shorter side scaled to ``short_side``, keeping the aspect;
    with ``upscale=False`` a frame already at or below ``short_side`` keeps its size."""
    if short_side is None or (not upscale and min(width, height) <= short_side):
        return width, height
    if width <= height:
        return short_side, max(1, int(height * short_side / width + 0.5))
    return max(1, int(width * short_side / height + 0.5)), short_side


class _Converter:
    """RGB conversion of the returned frames only, resized inside libswscale, then rotated.

    One single-threaded scaler serves the whole read: PyAV's ``to_ndarray``/``reformat``
    default to a fresh scaler per frame with an automatic thread count, which costs a
    scaler set-up per frame and starts a thread pool in every DataLoader worker (measured:
    about 10x slower per frame at 320x240). The output size is fixed by the first converted
    frame, so a stream that changes resolution mid-way still yields frames that stack.
    """

    def __init__(self, short_side: int | None, upscale: bool = True) -> None:
        self.short_side = short_side
        self.upscale = upscale
        self.size: tuple[int, int] | None = None
        self.scaler = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            self.size = _output_size(frame.width, frame.height, self.short_side, self.upscale)
        width, height = self.size
        rgb = self.scaler.reformat(
            frame, width=width, height=height, format="rgb24", interpolation="BILINEAR", threads=1
        )
        array = rgb.to_ndarray()
        rotation = _rotation(frame)
        if rotation:
            array = np.rot90(array, k=-rotation // 90)
        return array


def _decode(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    wanted: list[int],
    short_side: int | None,
    *,
    seek: bool,
    count: bool = False,
    upscale: bool = True,
) -> dict[int, np.ndarray]:
    """RGB arrays for the sorted, distinct frame numbers ``wanted`` (see the numbering rule).

    ``seek=False`` decodes from the start; ``count=True`` numbers frames by decode position.
    """
    fps = _frame_rate(stream, container.name)
    tb = stream.time_base or Fraction(1, 1)
    convert = _Converter(short_side, upscale)

    def threshold(first_pts: int, i: int) -> int:
        # Frame i is the first frame with pts * tb >= first + (i - 1/2) / fps.
        return first_pts + math.ceil(Fraction(2 * i - 1, 2) / fps / tb)

    def thresholds_from(first_pts: int) -> list[int]:
        return [threshold(first_pts, i) for i in wanted]

    frames: Iterator[av.VideoFrame]
    if count:
        frames = container.decode(stream)
        thresholds = list(wanted)
    elif seek and _worth_seeking(stream, threshold(stream.start_time or 0, wanted[0])):
        first_pts = _first_pts(container, stream)
        thresholds = thresholds_from(first_pts)
        period = max(1, round(1 / (fps * tb)))
        frames = _seek_frames(container, stream, first_pts, thresholds[0], period)
    else:
        frames = container.decode(stream)
        head = next(frames, None)
        if head is None:
            raise DecodeError(f"no decodable frame in {container.name}")
        if head.pts is None:
            raise _NoTimestamps
        thresholds = thresholds_from(head.pts)
        frames = chain([head], frames)

    out: dict[int, np.ndarray] = {}
    k = 0
    last: av.VideoFrame | None = None
    last_array: np.ndarray | None = None
    for n, frame in enumerate(frames):
        if count:
            position = n
        elif frame.pts is None:
            raise _NoTimestamps
        else:
            position = frame.pts
        last, last_array = frame, None
        if position >= thresholds[k]:
            last_array = convert(frame)
            while k < len(wanted) and position >= thresholds[k]:
                out[wanted[k]] = last_array
                k += 1
            if k == len(wanted):
                return out
    # A video shorter than the clip repeats its last frame. A video that *states* it is long
    # enough but stops early is truncated (a partial download: WebM and AVI keep their
    # header at the front, so they still open): that is an error, not a frozen clip.
    if last is None:
        raise DecodeError(f"no decodable frame in {container.name}")
    stated = _num_frames(container, stream, fps)
    if wanted[k] < stated - max(3, stated // 20):
        raise DecodeError(
            f"truncated video {container.name}: it states {stated} frames but decoding "
            f"stopped before frame {wanted[k]}"
        )
    if last_array is None:
        last_array = convert(last)
    for i in wanted[k:]:
        out[i] = last_array
    return out


Sampler = Callable[[int], Sequence[int]]
"""Chooses a clip's frame indices from the video's frame count (see :func:`read_clip`)."""


def _read(
    path: PathLike,
    request: Sequence[int] | Sampler,
    short_side: int | None,
    threads: int,
    *,
    seek: bool,
    upscale: bool = True,
) -> tuple[list[int], dict[int, np.ndarray]]:
    """The requested indices and their frames, by :func:`_decode`.

    ``request`` is the indices, or a sampler called once (on the first open) with the frame
    count. A failed seek or missing timestamps retry on a freshly opened file.
    """
    sampler: Sampler | None = None
    indices: list[int] | None = None
    if callable(request):
        sampler = request
    else:
        indices = _validate_indices(request)
    count = False
    while True:
        try:
            with _open(path) as container:
                stream = _video_stream(container, path, threads)
                if indices is None:
                    assert sampler is not None
                    num_frames = _num_frames(container, stream, _frame_rate(stream, path))
                    indices = _validate_indices(sampler(num_frames))
                wanted = sorted(set(indices))
                arrays = _decode(
                    container, stream, wanted, short_side, seek=seek, count=count, upscale=upscale
                )
                return indices, arrays
        except _SeekFailed:
            seek = False
        except _NoTimestamps:
            seek, count = False, True


def _check_read_args(short_side: int | None, threads: int) -> None:
    if short_side is not None and operator.index(short_side) < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    if operator.index(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")


def read_frames(
    path: PathLike,
    indices: Sequence[int],
    short_side: int | None = None,
    *,
    threads: int = 1,
) -> torch.Tensor:
    """Frames ``indices`` of the video at ``path`` as uint8 RGB ``[len(indices), H, W, 3]``.

    ``indices`` may be in any order and repeat; each distinct frame is decoded and converted
    once, and the output follows ``indices``. Numbering and the handling of indices past the
    end follow the module docstring (a video shorter than the clip repeats its last frame).

    Args:
        path: the video file.
        indices: frame numbers, >= 0.
        short_side: if given, frames are resized (bilinear, area-aware when shrinking) so that
            the shorter side is ``short_side`` pixels, keeping the aspect ratio; the long side
            is rounded to the nearest pixel, odd sizes included. Done during RGB conversion.
        threads: FFmpeg decoding threads; keep 1 inside DataLoader workers (see the module
            docstring).

    Raises:
        DecodeError: the file cannot be opened or has no decodable video frame.
        ValueError: bad ``indices``, ``short_side`` or ``threads``.
    """
    _check_read_args(short_side, threads)
    wanted, arrays = _read(path, indices, short_side, threads, seek=True)
    return torch.from_numpy(np.stack([arrays[i] for i in wanted]))


def read_clip(
    path: PathLike,
    sampler: Sampler,
    short_side: int | None = None,
    *,
    threads: int = 1,
    upscale: bool = True,
) -> tuple[torch.Tensor, list[int]]:
    """``probe`` + choose indices + ``read_frames`` with the file opened once: the hot path.

    ``upscale=False`` only shrinks: a video whose short side is already at most
    ``short_side`` keeps its size (pretraining crops and resizes afterwards anyway, so an
    upscale here would only interpolate twice).

    ``sampler`` gets the frame count (as :attr:`VideoMeta.num_frames` reports it) and returns
    the indices, e.g. ``lambda n: pretrain_indices(n, 16, 4, rng)``; it is called exactly
    once. Returns the clip (as :func:`read_frames`) and the indices. Compared with calling
    :func:`probe` first, this saves a second open and probe's keyframe decode (about 3.5 ms of
    a 15 ms read for a 320x240 H.264 clip of 16 frames).
    """
    _check_read_args(short_side, threads)
    indices, arrays = _read(path, sampler, short_side, threads, seek=True, upscale=upscale)
    return torch.from_numpy(np.stack([arrays[i] for i in indices])), indices


def read_image(path: PathLike, short_side: int | None = None) -> torch.Tensor:
    """An image as a one-frame clip: uint8 RGB ``[1, H, W, 3]``.

    The image is turned upright by its EXIF orientation (as videos are by their display
    matrix), converted to RGB (greyscale, palette, CMYK; alpha is dropped) and, if
    ``short_side`` is given, resized with an antialiasing bilinear filter so its shorter side
    is ``short_side``. JPEGs are decoded at a reduced DCT scale when that still leaves at
    least ``short_side`` pixels, which makes large photos several times cheaper to read.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if short_side is not None and operator.index(short_side) < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    try:
        with Image.open(path) as image:
            if short_side is not None:
                w, h = image.size
                scale = short_side / min(w, h)
                image.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
            upright = ImageOps.exif_transpose(image)
            rgb = upright.convert("RGB")
            if short_side is not None:
                size = _output_size(rgb.width, rgb.height, short_side)
                if size != rgb.size:
                    rgb = rgb.resize(size, Image.Resampling.BILINEAR)
            array = np.array(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise DecodeError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(array).unsqueeze(0)


# --------------------------------------------------------------------------- benchmark


def decode_benchmark(
    path: Path,
    clip_len: int,
    stride: int,
    clips: int,
    seed: int = 0,
    short_side: int | None = None,
) -> dict[str, float]:
    """Clips per second in this process: seeking reader vs decoding from the start.

    Both readers get the same ``clips`` pretraining index sets (:func:`pretrain_indices` from
    ``seed``) and convert only the needed frames, resized to ``short_side``; they differ only
    in that the naive one does not seek, decoding every frame from the first up to the clip's
    last. Each is warmed up on one clip first (page cache, codec set-up).

    Returns ``seek_clips_per_s``, ``from_start_clips_per_s``, ``speedup`` (their ratio),
    ``num_frames`` and ``clips``.
    """
    _check_positive(clips=clips)
    meta = probe(path)
    rng = np.random.default_rng(seed)
    index_sets = [pretrain_indices(meta.num_frames, clip_len, stride, rng) for _ in range(clips)]

    def rate(read: Callable[[list[int]], object]) -> float:
        read(index_sets[0])
        start = time.perf_counter()
        for indices in index_sets:
            read(indices)
        return clips / (time.perf_counter() - start)

    def from_start(indices: list[int]) -> object:
        return _read(path, indices, short_side, 1, seek=False)

    seek_rate = rate(lambda indices: read_frames(path, indices, short_side))
    naive_rate = rate(from_start)
    return {
        "seek_clips_per_s": seek_rate,
        "from_start_clips_per_s": naive_rate,
        "speedup": seek_rate / naive_rate,
        "num_frames": float(meta.num_frames),
        "clips": float(clips),
    }

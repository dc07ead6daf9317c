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
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

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

PathLike = str | Path


class DecodeError(RuntimeError):
    """A file could not be opened or decoded (missing, corrupt, not a video, no video stream)."""


@dataclass(frozen=True)
class VideoMeta:
    """What :func:`probe` learns about a video's first video stream.

    ``width`` and ``height`` are the coded (stored) size; ``rotation`` is how many degrees
    clockwise the displayed picture is turned relative to it (0, 90, 180 or 270), so for 90 and
    270 the frames :func:`read_frames` returns are ``width`` tall and ``height`` wide.
    ``num_frames`` counts frames at ``fps`` (see the module docstring for the numbering).
    """

    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames as displayed, after the rotation."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


# --------------------------------------------------------------------------- opening


@contextmanager
def _decoding(path: PathLike) -> Iterator[None]:
    """Turn PyAV errors raised inside the block into :class:`DecodeError` naming ``path``."""
    try:
        yield
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, EOFError) as err:
        raise DecodeError(f"cannot decode {path}: {err}") from err


@contextmanager
def _open(path: PathLike) -> Iterator[av.container.InputContainer]:
    """Open ``path`` for reading and always close it, even when decoding stops half-way."""
    with _decoding(path):
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    try:
        with _decoding(path):
            yield container
    finally:
        container.close()


def _video_stream(
    container: av.container.InputContainer, path: PathLike, threads: int = 1
) -> av.video.stream.VideoStream:
    """The first real video stream (not cover art), set up to decode with ``threads`` threads.

    The other streams are discarded so that the demuxer can skip their packets.
    """
    streams = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        raise DecodeError(f"no video stream in {path}")
    stream = streams[0]
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all
    context = stream.codec_context
    if threads == 1:
        context.thread_type = "NONE"
        context.thread_count = 1
    else:
        context.thread_type = "AUTO"
        context.thread_count = threads
    return stream


def _frame_rate(stream: av.video.stream.VideoStream, path: PathLike) -> Fraction:
    """The stream's average frame rate, falling back to FFmpeg's guesses when it is unset."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    raise DecodeError(f"no frame rate in {path}")


def _rotation(frame: av.VideoFrame) -> int:
    """Clockwise display rotation of a decoded frame, rounded to a multiple of 90 degrees.

    PyAV reports the display matrix as a counter-clockwise angle in [-180, 180].
    """
    return (-round(frame.rotation / 90) * 90) % 360


def _parse_hms(text: str) -> float | None:
    """Seconds in a Matroska ``DURATION`` tag such as ``00:00:04.040000000``."""
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _count_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> int:
    """Frame count for files that state neither a count nor a duration: demux, do not decode."""
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return count


def _num_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, fps: Fraction
) -> int:
    """The stated frame count, else duration x average rate, else a packet count."""
    if stream.frames > 0:
        return stream.frames
    seconds: float | None = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    if not seconds and "DURATION" in stream.metadata:
        seconds = _parse_hms(stream.metadata["DURATION"])
    if not seconds and container.duration:
        seconds = container.duration / av.time_base
    if seconds and seconds > 0:
        return max(1, round(seconds * fps))
    return _count_frames(container, stream)


def probe(path: PathLike) -> VideoMeta:
    """Frame count, average rate, coded size and display rotation of the first video stream.

    The count is the container's when it states one (AVI, MP4), else the duration times the
    average rate (WebM/Matroska state only a duration). The rotation needs one keyframe decoded
    (PyAV 18 exposes the display matrix on frames only), which also proves the file decodes.
    Raises :class:`DecodeError` for anything that is not a decodable video.
    """
    with _open(path) as container:
        stream = _video_stream(container, path)
        fps = _frame_rate(stream, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise DecodeError(f"video stream of {path} has no frame size")
        num_frames = _num_frames(container, stream, fps)
        stream.codec_context.skip_frame = "NONKEY"
        first = next(container.decode(stream), None)
        if first is None:
            raise DecodeError(f"no decodable frame in {path}")
        return VideoMeta(
            num_frames=num_frames,
            fps=float(fps),
            width=width,
            height=height,
            rotation=_rotation(first),
        )


# --------------------------------------------------------------------------- reading clips


class _NoTimestamps(Exception):
    """A decoded frame had no timestamp: number frames by counting from the start instead."""


class _SeekFailed(Exception):
    """Seeking did not land at or before the first needed frame: decode from the start."""


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


def _first_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Timestamp of the first frame, from a keyframe-only decode (the cheapest way to get it)."""
    context = stream.codec_context
    context.skip_frame = "NONKEY"
    try:
        first = next(container.decode(stream), None)
    finally:
        context.skip_frame = "DEFAULT"
    if first is None:
        raise DecodeError(f"no decodable frame in {container.name}")
    if first.pts is None:
        raise _NoTimestamps
    return first.pts


def _demux_decode(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    landed: list[int],
) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)``, noting in ``landed`` the timestamp of the first packet.

    After a seek, that packet is the keyframe the demuxer picked, in the index's own time
    (decode time for AVI and MP4), which tells a retry where to go to land before it.
    """
    for packet in container.demux(stream):
        if not landed:
            stamp = packet.dts if packet.dts is not None else packet.pts
            if stamp is not None:
                landed.append(stamp)
        yield from packet.decode()


def _seek_frames(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    first_pts: int,
    target: int,
    period: int,
) -> Iterator[av.VideoFrame]:
    """Frames from a keyframe at or before timestamp ``target`` on, in presentation order.

    A backward seek picks the keyframe by the index's timestamps, which for some files (AVI
    with packed B-frames, MP4 indexed by decode time) are not presentation times, so the first
    frame out can come after ``target``, and frames in between may be missing. Then we seek
    again to just before the keyframe we landed on, and at least 1, 2, 4, ... frame periods
    further back each time; if even the start of the video overshoots, we give up on seeking.
    """
    offset = target
    back = period
    while True:
        container.seek(offset, stream=stream, backward=True)
        landed: list[int] = []
        frames = _demux_decode(container, stream, landed)
        head = next(frames, None)
        if head is not None:
            if head.pts is None:
                raise _NoTimestamps
            if head.pts <= target or head.pts == first_pts:
                return chain([head], frames)
        # Nothing decoded (seeking near the end can do that) or we landed too late.
        if offset <= first_pts:
            raise _SeekFailed
        offset = max(first_pts, min(offset - back, landed[0] - 1 if landed else offset))
        back *= 2


def _worth_seeking(stream: av.video.stream.VideoStream, target: int) -> bool:
    """Whether a keyframe after the first one precedes timestamp ``target``, per the index.

    Only then can a seek skip anything; otherwise decoding from the start saves the seek and
    the keyframe decode that finds the first timestamp (about 5% of a read when a short video
    has a single keyframe, as x264's default 250-frame interval gives). ``target`` may be off
    by a few frames (it assumes ``start_time`` is the first frame's timestamp): this only
    decides how to read, not what is read. Without an index we seek; so we do for Matroska/WebM,
    whose demuxer loads its keyframe index (cues) only on the first seek.
    """
    entries = stream.index_entries
    if len(entries) <= 1:
        return True
    landing = entries.search_timestamp(target, backward=True)
    first_key = entries.search_timestamp(entries[0].timestamp, backward=False)
    return landing > first_key >= 0


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


# --------------------------------------------------------------------------- samplers


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if operator.index(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def pretrain_indices(
    num_frames: int, clip_len: int, stride: int, rng: np.random.Generator
) -> list[int]:
    """Pretraining clip: ``clip_len`` frames ``stride`` apart from a uniformly random start.

    The start is drawn from every position where the whole clip fits, as in the reference's
    random clip start. A video shorter than the clip's span starts at 0 and repeats its last
    frame (indices past the end are clamped), again as the reference does; no number is drawn
    from ``rng`` then.
    """
    _check_positive(num_frames=num_frames, clip_len=clip_len, stride=stride)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    span = (clip_len - 1) * stride + 1
    if num_frames < span:
        return [min(k * stride, num_frames - 1) for k in range(clip_len)]
    start = int(rng.integers(0, num_frames - span + 1))
    return [start + k * stride for k in range(clip_len)]


def uniform_indices(num_frames: int, clip_len: int) -> list[int]:
    """Evaluation clip: ``clip_len`` frames spread uniformly over the whole video.

    Exactly the reference's evaluation loader: ``linspace(0, L - 1, clip_len)`` truncated to
    integers, so the first and last frames are always included. A video with fewer frames than
    ``clip_len`` gives ``0 .. L - 1`` followed by repeats of the last frame.
    """
    _check_positive(num_frames=num_frames, clip_len=clip_len)
    if num_frames < clip_len:
        return list(range(num_frames)) + [num_frames - 1] * (clip_len - num_frames)
    return [int(x) for x in np.linspace(0, num_frames - 1, clip_len).astype(np.int64)]


def first_indices(num_frames: int, clip_len: int) -> list[int]:
    """The first ``clip_len`` frames, ``0 .. clip_len - 1`` (the reference's synthetic-motion
    scorer); a shorter video repeats its last frame."""
    _check_positive(num_frames=num_frames, clip_len=clip_len)
    return [min(i, num_frames - 1) for i in range(clip_len)]


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

"""Opening a video with PyAV and reading what its container states: the probe side of decoding.

The error type every reader raises (:class:`DecodeError`), the metadata :func:`probe` returns
(:class:`VideoMeta`), opening a file so that PyAV errors name it, picking and setting up the
video stream, and the stream's frame rate, frame count and display rotation. Cut from
:mod:`jepactl.data.decode` here because none of it decodes a clip: it is what both
:func:`probe` and the clip readers need before the first frame is decoded. The frame
numbering, threading and error rules are the ones :mod:`jepactl.data.decode`'s docstring
states; :mod:`jepactl.data.decode` re-exports every public name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

__all__ = ["DecodeError", "PathLike", "VideoMeta", "probe"]


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

"""Where decoding of a clip starts: one seek to a keyframe before the first needed frame.

The seek itself (:func:`_seek_frames`, with its retries for files whose index is in decode
time), the cheap decision whether a seek can skip anything (:func:`_worth_seeking`), the first
frame's timestamp the frame numbering counts from (:func:`_first_pts`), and the two signals
that make a read fall back to decoding from the start (:class:`_SeekFailed`) or to counting
frames (:class:`_NoTimestamps`). Cut from :mod:`jepactl.data.decode` here because this is the
one part of a read that moves the demuxer; what is decoded and returned once it stands at the
right place stays there. :mod:`jepactl.data.decode` imports these names into its own
namespace and looks :func:`_seek_frames` up there, so patching
``jepactl.data.decode._seek_frames`` still reaches every read.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

import av

from jepactl.data.container import DecodeError


class _NoTimestamps(Exception):
    """A decoded frame had no timestamp: number frames by counting from the start instead."""


class _SeekFailed(Exception):
    """Seeking did not land at or before the first needed frame: decode from the start."""


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

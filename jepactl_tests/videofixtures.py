"""Write tiny real videos and images for tests, with each frame's index drawn into its pixels.

Decoder tests need files produced by the same codecs the datasets use (MPEG-4 Part 2 in AVI
for UCF-101, VP9 in WebM for SSv2, H.264 in MP4 for Diving-48), and they need to know which
frame a decoder handed back. So every frame carries its own index as a binary code of large
black/white cells that survives lossy compression, chroma subsampling and downscaling, plus a
band of a constant colour with three distinct channel values, so a test can tell RGB from BGR.

Frame layout (``W x H``, any size from about 32 x 24 up):

* rows ``[0, H // 4)``: the colour band, :data:`BAND_RGB` (pattern ``"index"``) or a scrolling
  random texture (pattern ``"texture"``, for benchmarks whose cost should look like real video);
* rows ``[H // 4, H)``: a :data:`CODE_ROWS` x :data:`CODE_COLS` grid of cells; cell ``k``
  (row-major) is white when bit ``k`` of the frame index is set, else black. So indices up to
  :data:`MAX_INDEX` are representable.

The public API:

* :func:`write_video`: frames ``0 .. num_frames - 1`` to a file, codec chosen by the suffix;
* :func:`write_rotated_video`: the same, with display-matrix rotation metadata;
* :func:`write_image`: a solid-colour JPEG (or any format PIL infers from the suffix);
* :func:`draw_frame`: the RGB frame :func:`write_video` encodes for an index;
* :func:`frame_index` and :func:`band_rgb`: read the index and the band colour back from a
  decoded ``[H, W, 3]`` uint8 frame (numpy or torch), at any resolution.

Import it as ``from videofixtures import write_video, frame_index``: ``jepactl_tests`` has no
``__init__.py``, so pytest puts this directory on ``sys.path``. Writing takes milliseconds
per tiny clip (about 10 ms for 40 frames of 64 x 48), so tests can make their own files.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import torch

BAND_RGB: tuple[int, int, int] = (224, 96, 32)
"""The constant band colour of pattern ``"index"``: distinct channels expose a swapped order."""

CODE_ROWS = 3
CODE_COLS = 4
MAX_INDEX = 2 ** (CODE_ROWS * CODE_COLS) - 1
"""The largest frame index the cell code can hold (the grid has 12 bits)."""

CODECS: dict[str, str] = {
    ".avi": "mpeg4",
    ".webm": "libvpx-vp9",
    ".mp4": "libx264",
    ".mkv": "libx264",
    ".mov": "libx264",
}
"""The default encoder for each container suffix, matching the datasets' usual codecs."""

PATTERNS = ("index", "texture")


def _cell_box(k: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel box ``(top, bottom, left, right)`` of code cell ``k`` in a ``height x width`` frame."""
    top0 = height // 4
    r, c = divmod(k, CODE_COLS)
    top = top0 + (height - top0) * r // CODE_ROWS
    bottom = top0 + (height - top0) * (r + 1) // CODE_ROWS
    left = width * c // CODE_COLS
    right = width * (c + 1) // CODE_COLS
    return top, bottom, left, right


@lru_cache(maxsize=8)
def _base_texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random RGB texture, ``[height, width + 16, 3]`` float32 (cached per video).

    Low-resolution noise upsampled by 8 keeps it compressible yet costly enough to decode that
    a benchmark on it is not dominated by container overhead.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    fine = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1).astype(np.float32)
    # A 3-tap box blur in each direction softens the block edges.
    fine = (fine + np.roll(fine, 1, 0) + np.roll(fine, -1, 0)) / 3
    fine = (fine + np.roll(fine, 1, 1) + np.roll(fine, -1, 1)) / 3
    fine.setflags(write=False)
    return fine[:height]


def _texture(height: int, width: int, shift: int, seed: int) -> np.ndarray:
    """:func:`_base_texture` as uint8 ``[height, width, 3]``, scrolled ``shift`` pixels left."""
    fine = _base_texture(height, width, seed)
    cols = (np.arange(width) + shift) % fine.shape[1]
    return fine[:, cols].astype(np.uint8)


def draw_frame(
    index: int, size: tuple[int, int] = (64, 48), pattern: str = "index", seed: int = 0
) -> np.ndarray:
    """The uint8 ``[H, W, 3]`` RGB frame that :func:`write_video` encodes as frame ``index``.

    ``size`` is ``(width, height)``, as for :func:`write_video`.
    """
    width, height = size
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index must be in [0, {MAX_INDEX}], got {index}")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if width < 8 or height < 8:
        raise ValueError(f"size must be at least 8 x 8, got {size}")
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    band = height // 4
    if pattern == "index":
        frame[:band] = BAND_RGB
    else:
        tex = _texture(height, width, shift=3 * index, seed=seed)
        frame[:band] = tex[:band]
    for k in range(CODE_ROWS * CODE_COLS):
        top, bottom, left, right = _cell_box(k, height, width)
        frame[top:bottom, left:right] = 255 if (index >> k) & 1 else 0
    if pattern == "texture":
        # Low-amplitude moving texture on the cells too; far from the 0/255 decision threshold.
        texture = _texture(height, width, shift=3 * index, seed=seed + 1)
        noise = (texture[band:] // 6).astype(np.int16)
        cells = frame[band:].astype(np.int16)
        frame[band:] = np.clip(np.where(cells > 127, cells - noise, cells + noise), 0, 255)
    return frame


def _as_numpy(frame: np.ndarray | torch.Tensor) -> np.ndarray:
    array = frame.numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] frame, got shape {tuple(array.shape)}")
    return array


def frame_index(frame: np.ndarray | torch.Tensor) -> int:
    """Read back the index drawn by :func:`draw_frame` from a decoded ``[H, W, 3]`` frame.

    Each cell is judged by the mean of its central half, away from the blurred edges, so the
    code survives lossy codecs and any resize that keeps the aspect ratio.
    """
    array = _as_numpy(frame)
    height, width = array.shape[:2]
    index = 0
    for k in range(CODE_ROWS * CODE_COLS):
        top, bottom, left, right = _cell_box(k, height, width)
        dy, dx = (bottom - top) // 4, (right - left) // 4
        centre = array[top + dy : bottom - dy, left + dx : right - dx]
        if centre.size and float(centre.mean()) > 127.5:
            index |= 1 << k
    return index


def band_rgb(frame: np.ndarray | torch.Tensor) -> tuple[int, int, int]:
    """Mean colour of the central part of the band (compare with :data:`BAND_RGB`)."""
    array = _as_numpy(frame)
    height, width = array.shape[:2]
    band = height // 4
    centre = array[band // 4 : band - band // 4 or 1, width // 4 : width - width // 4]
    mean = centre.reshape(-1, 3).mean(axis=0)
    red, green, blue = (int(v) for v in np.rint(mean))
    return red, green, blue


def _configure(stream: av.video.stream.VideoStream, codec: str, gop: int, bframes: int) -> None:
    """Fix the keyframe interval so that reading from mid-video needs a real seek."""
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    if codec == "libx264":
        # scenecut=0: the index code changes abruptly, which would otherwise add keyframes.
        stream.options = {
            "preset": "veryfast",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}",
        }
    elif codec == "libvpx-vp9":
        stream.options = {
            "g": str(gop),
            "keyint_min": str(gop),
            "deadline": "realtime",
            "cpu-used": "8",
            "crf": "20",
            "b": "0",
        }
    elif codec == "mpeg4":
        stream.codec_context.max_b_frames = bframes
        stream.options = {"g": str(gop), "qscale": "3"}
    else:
        stream.options = {"g": str(gop)}


def write_video(
    path: Path,
    num_frames: int,
    size: tuple[int, int] = (64, 48),
    fps: int | Fraction = 25,
    codec: str | None = None,
    pattern: str = "index",
    *,
    gop: int = 10,
    bframes: int = 2,
    rotation: int = 0,
    timestamps: Sequence[float] | None = None,
    seed: int = 0,
) -> Path:
    """Encode frames ``draw_frame(0) .. draw_frame(num_frames - 1)`` to ``path``; return ``path``.

    Args:
        path: output file; its suffix picks the container and, unless ``codec`` is given, the
            encoder (see :data:`CODECS`: ``.avi`` MPEG-4, ``.webm`` VP9, ``.mp4`` H.264).
        num_frames: frames to write, at most ``MAX_INDEX + 1``.
        size: ``(width, height)``; even sizes avoid 4:2:0 edge effects.
        fps: constant frame rate (a ``Fraction`` such as ``30000/1001`` works too).
        codec: encoder name overriding the suffix default.
        pattern: ``"index"`` (colour band + code) or ``"texture"`` (moving texture + code).
        gop: keyframe interval in frames; small so mid-video reads must seek past keyframes.
        bframes: B-frames (H.264, MPEG-4), so presentation order differs from decode order.
        rotation: clockwise display rotation in degrees (0/90/180/270), written as the
            stream's display matrix; MP4/MOV/MKV/WebM only (AVI has no place for it).
        timestamps: presentation time in seconds of each frame (increasing, milliseconds
            precision), for variable-frame-rate files; ``fps`` then only hints the encoder.
            MP4/MOV/MKV/WebM only (AVI is constant-rate by design).
        seed: seed of the ``"texture"`` pattern.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if codec is None:
        if suffix not in CODECS:
            raise ValueError(f"no default codec for suffix {suffix!r}; pass codec=")
        codec = CODECS[suffix]
    if not 1 <= num_frames <= MAX_INDEX + 1:
        raise ValueError(f"num_frames must be in [1, {MAX_INDEX + 1}], got {num_frames}")
    if rotation % 90 or not 0 <= rotation < 360:
        raise ValueError(f"rotation must be 0, 90, 180 or 270, got {rotation}")
    if rotation and suffix == ".avi":
        raise ValueError("AVI cannot carry rotation metadata")
    millis: list[int] | None = None
    if timestamps is not None:
        if suffix == ".avi":
            raise ValueError("AVI cannot store variable frame timing")
        millis = [round(1000 * t) for t in timestamps]
        if len(millis) != num_frames or any(b <= a for a, b in pairwise(millis)):
            raise ValueError("timestamps must give num_frames increasing times, >= 1 ms apart")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = size
        _configure(stream, codec, gop, bframes)
        if rotation:
            # PyAV's angle is counter-clockwise (as VideoFrame.rotation reads it back).
            stream.set_display_rotation(-rotation)
        if millis is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(num_frames):
            image = draw_frame(i, size, pattern, seed)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if millis is None:
                frame.pts = i
            else:
                frame.pts = millis[i]
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_rotated_video(
    path: Path,
    num_frames: int,
    rotation: int,
    size: tuple[int, int] = (64, 48),
    fps: int | Fraction = 25,
    codec: str | None = None,
    pattern: str = "index",
) -> Path:
    """:func:`write_video` with a display rotation of ``rotation`` degrees clockwise.

    The rotation goes into the stream's display matrix (PyAV's ``set_display_rotation``),
    where phone cameras put it. A decoder that honours it shows the coded frame turned by
    ``rotation``: for 90, the colour band (coded at the top) ends up on the right-hand side,
    and ``np.rot90(displayed, k=rotation // 90)`` gives back the coded frame.
    """
    return write_video(path, num_frames, size, fps, codec, pattern, rotation=rotation)


def write_image(
    path: Path, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = BAND_RGB
) -> Path:
    """Write a solid ``color`` image of ``size`` ``(width, height)``; the suffix picks the format.

    JPEG (``.jpg``) stores it with quality 95, close enough to ``color`` for a few-level check.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=95)
    return path

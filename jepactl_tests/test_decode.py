"""Tests for video/image decoding and clip index sampling (``jepactl.data.decode``).

Every video is a real file written by the codec its dataset uses (MPEG-4 in AVI, VP9 in WebM,
H.264 in MP4), with short keyframe intervals and B-frames, and each frame carries its index in
its pixels. So the tests check that a read returns exactly the requested frames, including
after a seek past several keyframes, which is where frame-accurate readers usually go wrong.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from videofixtures import (
    BAND_RGB,
    band_rgb,
    frame_index,
    write_image,
    write_rotated_video,
    write_video,
)

from jepactl.data import decode
from jepactl.data.decode import (
    DecodeError,
    VideoMeta,
    decode_benchmark,
    pretrain_indices,
    probe,
    read_clip,
    read_frames,
    read_image,
    uniform_indices,
)

FORMATS = (".avi", ".webm", ".mp4")
NUM_FRAMES = 40
FPS = 25
SIZE = (64, 48)
GOP = 10


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 1.6 s clip per container/codec, keyframes every 10 frames, B-frames where possible."""
    root = tmp_path_factory.mktemp("videos")
    return {
        suffix: write_video(root / f"clip{suffix}", NUM_FRAMES, SIZE, FPS, gop=GOP)
        for suffix in FORMATS
    }


def _indices(clip: torch.Tensor) -> list[int]:
    return [frame_index(frame) for frame in clip]


def _expected(indices: Sequence[int], num_frames: int = NUM_FRAMES) -> list[int]:
    return [min(i, num_frames - 1) for i in indices]


def _keyframes(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(packet.is_keyframe for packet in container.demux(stream) if packet.size)


# --------------------------------------------------------------------------- probe


@pytest.mark.parametrize("suffix", FORMATS)
def test_probe_counts_rate_and_size(videos: dict[str, Path], suffix: str) -> None:
    meta = probe(videos[suffix])
    assert meta == VideoMeta(num_frames=NUM_FRAMES, fps=25.0, width=64, height=48, rotation=0)
    assert meta.display_size == (64, 48)


def test_probe_estimates_count_from_duration_for_webm(videos: dict[str, Path]) -> None:
    # WebM states no frame count; the estimate is duration x average rate.
    with av.open(str(videos[".webm"])) as container:
        assert container.streams.video[0].frames == 0
    assert probe(videos[".webm"]).num_frames == NUM_FRAMES


def test_probe_accepts_str_paths(videos: dict[str, Path]) -> None:
    assert probe(str(videos[".mp4"])).num_frames == NUM_FRAMES


# --------------------------------------------------------------------------- read_frames


@pytest.mark.parametrize("suffix", FORMATS)
def test_files_have_several_keyframes(videos: dict[str, Path], suffix: str) -> None:
    # Otherwise the mid-video tests below would not exercise seeking.
    assert _keyframes(videos[suffix]) >= 3


@pytest.mark.parametrize("suffix", FORMATS)
def test_read_frames_returns_exactly_the_requested_frames(
    videos: dict[str, Path], suffix: str
) -> None:
    path = videos[suffix]
    rng = np.random.default_rng(7)
    cases: list[list[int]] = [
        list(range(NUM_FRAMES)),
        [0],
        [NUM_FRAMES - 1],
        [17, 3, 29, 3, 17, 0],  # unsorted with duplicates
        [25, 26, 27, 25],  # mid-video start, past two keyframes
        [9, 10, 11, 19, 20, 21],  # across keyframe boundaries
        [38, 39, 40, 41, 100],  # past the end repeats the last frame
        [55, 60],  # entirely past the end
    ]
    cases += [rng.integers(0, NUM_FRAMES + 5, size=rng.integers(1, 9)).tolist() for _ in range(12)]
    for indices in cases:
        clip = read_frames(path, indices)
        assert clip.shape == (len(indices), 48, 64, 3)
        assert clip.dtype == torch.uint8
        assert _indices(clip) == _expected(indices), indices


@pytest.mark.parametrize("suffix", FORMATS)
def test_mid_video_read_seeks(
    videos: dict[str, Path], suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = decode._seek_frames

    def spy(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(decode, "_seek_frames", spy)
    assert _indices(read_frames(videos[suffix], [31, 33])) == [31, 33]
    assert calls, "a read from frame 31 of a 10-frame-GOP file should seek"
    calls.clear()
    assert _indices(read_frames(videos[suffix], [2, 4])) == [2, 4]
    if suffix != ".webm":  # Matroska loads its keyframe index only when it first seeks
        assert not calls, "a read within the first GOP should decode from the start"


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_start_position(videos: dict[str, Path], suffix: str) -> None:
    # Each start lands at a different offset from its keyframe (and from AVI's B-frame delay).
    for start in range(0, NUM_FRAMES, 1):
        indices = [start, start + 2]
        assert _indices(read_frames(videos[suffix], indices)) == _expected(indices)


@pytest.mark.parametrize("fallback", ["_SeekFailed", "_NoTimestamps"])
def test_fallbacks_read_the_same_frames(
    videos: dict[str, Path], fallback: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding from the start, and numbering by decode count, agree with the seeking path."""

    def fail(*args: object, **kwargs: object) -> None:
        raise getattr(decode, fallback)

    monkeypatch.setattr(decode, "_seek_frames", fail)
    for suffix in FORMATS:
        indices = [33, 12, 12, 45]
        assert _indices(read_frames(videos[suffix], indices)) == _expected(indices)


@pytest.mark.parametrize("suffix", [".webm", ".mp4"])
def test_ntsc_rate_with_rounded_timestamps(tmp_path: Path, suffix: str) -> None:
    # WebM stores milliseconds: at 30000/1001 fps frame 1 is at 33 ms, before 1/29.97 s.
    path = write_video(tmp_path / f"ntsc{suffix}", 30, fps=Fraction(30000, 1001), gop=8)
    meta = probe(path)
    assert meta.num_frames == 30
    assert meta.fps == pytest.approx(29.97, abs=0.01)
    indices = list(range(30))
    assert _indices(read_frames(path, indices)) == indices
    assert _indices(read_frames(path, [21, 22, 17])) == [21, 22, 17]


@pytest.mark.parametrize("suffix", [".webm", ".mp4"])
def test_variable_frame_rate_follows_the_documented_numbering(tmp_path: Path, suffix: str) -> None:
    """Frame i is the first frame at or after start + (i - 1/2) / average fps."""
    times = [0.0, 0.04, 0.08, 0.2, 0.24, 0.25, 0.26, 0.27, 0.4, 0.44, 0.48, 0.52, 0.56]
    times += [0.6 + 0.04 * k for k in range(12)]
    path = write_video(tmp_path / f"vfr{suffix}", len(times), timestamps=times, gop=6)
    meta = probe(path)
    got = _indices(read_frames(path, list(range(meta.num_frames + 2))))
    for i, k in enumerate(got):
        threshold = (i - 0.5) / meta.fps
        assert times[k] >= threshold - 1e-3 or k == len(times) - 1
        assert k == 0 or times[k - 1] < threshold + 1e-3
    # The same frames when reading from mid-video (seeking), in any order.
    tail = list(range(meta.num_frames - 1, 9, -3))
    assert _indices(read_frames(path, tail)) == [got[i] for i in tail]


@pytest.mark.parametrize("suffix", FORMATS)
def test_rgb_channel_order(videos: dict[str, Path], suffix: str) -> None:
    clip = read_frames(videos[suffix], [0, 23])
    for frame in clip:
        assert np.allclose(band_rgb(frame), BAND_RGB, atol=14), band_rgb(frame)


@pytest.mark.parametrize("suffix", FORMATS)
def test_short_side_resizes_keeping_aspect(videos: dict[str, Path], suffix: str) -> None:
    path = videos[suffix]
    for short_side, width in [(24, 32), (33, 44), (96, 128)]:
        clip = read_frames(path, [5, 30], short_side=short_side)
        assert clip.shape == (2, short_side, width, 3)
        assert _indices(clip) == [5, 30]
        assert np.allclose(band_rgb(clip[0]), BAND_RGB, atol=14)


def test_short_side_portrait(tmp_path: Path) -> None:
    path = write_video(tmp_path / "portrait.mp4", 12, size=(48, 64))
    clip = read_frames(path, [3], short_side=27)
    assert clip.shape == (1, 36, 27, 3)
    assert _indices(clip) == [3]


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path: Path, suffix: str, rotation: int) -> None:
    path = write_rotated_video(tmp_path / f"rot{rotation}{suffix}", 24, rotation)
    meta = probe(path)
    assert meta.rotation == rotation
    assert (meta.width, meta.height) == (64, 48)
    clip = read_frames(path, [20, 3], short_side=24)
    displayed = (24, 32) if rotation == 180 else (32, 24)
    assert clip.shape == (2, *displayed, 3)
    assert meta.display_size == ((64, 48) if rotation == 180 else (48, 64))
    coded = [np.rot90(frame.numpy(), k=rotation // 90) for frame in clip]
    assert [frame_index(f) for f in coded] == [20, 3]
    # The band, coded at the top, is displayed turned clockwise by `rotation`.
    frame = clip[0].numpy().astype(float)
    sides = {
        90: frame[:, -2:],  # right
        180: frame[-2:],  # bottom
        270: frame[:, :2],  # left
    }
    assert np.allclose(sides[rotation].reshape(-1, 3).mean(0), BAND_RGB, atol=16)


@pytest.mark.parametrize("suffix", FORMATS)
def test_threads_give_the_same_frames(videos: dict[str, Path], suffix: str) -> None:
    indices = [30, 5, 12]
    one = read_frames(videos[suffix], indices)
    two = read_frames(videos[suffix], indices, threads=2)
    assert _indices(two) == indices
    assert torch.equal(one, two)


def test_argument_validation(videos: dict[str, Path]) -> None:
    path = videos[".mp4"]
    for bad in ([], [-1], [1.5]):
        with pytest.raises(ValueError):
            read_frames(path, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        read_frames(path, [0], short_side=0)
    with pytest.raises(ValueError):
        read_frames(path, [0], threads=0)
    assert _indices(read_frames(path, np.array([4, 2]))) == [4, 2]  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", FORMATS)
def test_read_clip_samples_from_the_probed_count_with_one_open(
    videos: dict[str, Path], suffix: str
) -> None:
    counts: list[int] = []

    def sampler(num_frames: int) -> list[int]:
        counts.append(num_frames)
        return pretrain_indices(num_frames, 5, 3, np.random.default_rng(2))

    clip, indices = read_clip(videos[suffix], sampler, short_side=24)
    assert counts == [NUM_FRAMES]
    assert indices == pretrain_indices(NUM_FRAMES, 5, 3, np.random.default_rng(2))
    assert clip.shape == (5, 24, 32, 3)
    assert _indices(clip) == indices
    assert torch.equal(clip, read_frames(videos[suffix], indices, short_side=24))


def test_read_clip_calls_the_sampler_once_even_when_falling_back(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise decode._SeekFailed

    monkeypatch.setattr(decode, "_seek_frames", fail)
    rng = np.random.default_rng(0)
    calls = []

    def sampler(num_frames: int) -> list[int]:
        calls.append(num_frames)
        return [int(rng.integers(20, 35)), 3]

    clip, indices = read_clip(videos[".mp4"], sampler)
    assert len(calls) == 1
    assert _indices(clip) == indices


# --------------------------------------------------------------------------- errors


def _truncated(source: Path, dest: Path, fraction: float) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def _corrupt_files(videos: dict[str, Path], root: Path) -> list[Path]:
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    text = root / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    audio = root / "tone.wav"
    with av.open(str(audio), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return [
        empty,
        text,
        audio,
        root / "missing.avi",
        _truncated(videos[".mp4"], root / "half.mp4", 0.5),  # moov atom is at the end
        *(_truncated(videos[s], root / f"head{s}", 0.03) for s in FORMATS),
    ]


def test_corrupt_inputs_raise_decode_error_with_path(
    videos: dict[str, Path], tmp_path: Path
) -> None:
    for path in _corrupt_files(videos, tmp_path):
        for read in (probe, lambda p: read_frames(p, [0, 5])):
            with pytest.raises(DecodeError) as info:
                read(path)
            assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".webm", ".avi"])
def test_truncated_stream_is_an_error_not_a_frozen_clip(
    videos: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    # WebM keeps its header (and duration) at the front, an AVI cut near its end still opens:
    # a partial download must not train as a clip that freezes at the cut.
    path = _truncated(videos[suffix], tmp_path / f"cut{suffix}", 0.6)
    assert probe(path).num_frames == NUM_FRAMES
    if suffix == ".webm":  # before the cut: fine (the cut AVI lost its index, so it fails early)
        assert _indices(read_frames(path, [0, 5])) == [0, 5]
    with pytest.raises(DecodeError, match="truncated"):
        read_frames(path, [0, 5, NUM_FRAMES - 4])


def test_decode_error_is_a_runtime_error() -> None:
    assert issubclass(DecodeError, RuntimeError)


# --------------------------------------------------------------------------- images


def test_read_image(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.jpg", (64, 48), (200, 40, 90))
    image = read_image(path)
    assert image.shape == (1, 48, 64, 3)
    assert image.dtype == torch.uint8
    assert np.allclose(image.float().mean((0, 1, 2)).numpy(), (200, 40, 90), atol=4)
    assert read_image(path, short_side=24).shape == (1, 24, 32, 3)
    assert read_image(str(path), short_side=30).shape == (1, 30, 40, 3)


def test_read_image_converts_modes_and_applies_exif_orientation(tmp_path: Path) -> None:
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.new("L", (20, 10), 77).save(grey)
    assert read_image(grey).shape == (1, 10, 20, 3)
    assert int(read_image(grey)[0, 0, 0, 1]) == 77
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (20, 10), (1, 2, 3, 4)).save(rgba)
    assert read_image(rgba)[0, 0, 0].tolist() == [1, 2, 3]
    rotated = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise
    Image.new("RGB", (40, 20), (10, 200, 10)).save(rotated, exif=exif)
    assert read_image(rotated).shape == (1, 40, 20, 3)


def test_read_image_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    for path in (bad, tmp_path / "missing.png"):
        with pytest.raises(DecodeError, match=str(path)):
            read_image(path)
    with pytest.raises(ValueError):
        read_image(write_image(tmp_path / "ok.jpg"), short_side=0)


# --------------------------------------------------------------------------- samplers


def test_pretrain_indices_stride_and_range() -> None:
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(2000):
        indices = pretrain_indices(100, 16, 4, rng)
        assert len(indices) == 16
        assert np.all(np.diff(indices) == 4)
        assert indices[0] >= 0 and indices[-1] < 100
        starts.add(indices[0])
    assert starts == set(range(100 - 60))  # every start where the clip fits


def test_pretrain_indices_exact_fit_and_short_videos() -> None:
    rng = np.random.default_rng(0)
    assert pretrain_indices(61, 16, 4, rng) == list(range(0, 61, 4))
    assert pretrain_indices(10, 4, 4, rng) == [0, 4, 8, 9]
    assert pretrain_indices(1, 3, 2, rng) == [0, 0, 0]
    assert pretrain_indices(5, 1, 7, np.random.default_rng(1))[0] in range(5)


def test_pretrain_indices_is_deterministic_given_the_generator() -> None:
    a = [pretrain_indices(500, 8, 3, np.random.default_rng(42)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = np.random.default_rng(42)
    draws = [pretrain_indices(500, 8, 3, rng)[0] for _ in range(20)]
    assert len(set(draws)) > 1


def test_uniform_indices() -> None:
    assert uniform_indices(100, 16) == np.linspace(0, 99, 16).astype(int).tolist()
    indices = uniform_indices(301, 16)
    assert indices[0] == 0 and indices[-1] == 300
    assert np.all(np.diff(indices) >= 19) and np.all(np.diff(indices) <= 20)
    assert uniform_indices(16, 16) == list(range(16))
    assert uniform_indices(5, 8) == [0, 1, 2, 3, 4, 4, 4, 4]
    assert uniform_indices(7, 1) == [0]


def test_sampler_validation() -> None:
    rng = np.random.default_rng(0)
    for args in [(0, 4, 1), (10, 0, 1), (10, 4, 0)]:
        with pytest.raises(ValueError):
            pretrain_indices(*args, rng)
    with pytest.raises(ValueError):
        pretrain_indices(10, 4, 1, 123)  # type: ignore[arg-type]
    for args in [(0, 4), (4, 0)]:
        with pytest.raises(ValueError):
            uniform_indices(*args)


# --------------------------------------------------------------------------- workers


class _ClipDataset(Dataset[torch.Tensor]):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index % len(self.paths)]
        indices = pretrain_indices(NUM_FRAMES, 4, 3, np.random.default_rng(index))
        clip = read_frames(path, indices, short_side=24)
        return torch.tensor([frame_index(f) for f in clip] + indices)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_decoding_in_forked_dataloader_workers(videos: dict[str, Path]) -> None:
    dataset = _ClipDataset([videos[s] for s in FORMATS])
    dataset[0]  # decode in the parent first, so the workers fork a process that has decoded
    loader = DataLoader(
        dataset, batch_size=3, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    rows = torch.cat(list(loader))
    assert rows.shape == (12, 8)
    assert torch.equal(rows[:, :4], rows[:, 4:].clamp(max=NUM_FRAMES - 1))


# --------------------------------------------------------------------------- benchmark


def test_decode_benchmark_reports_both_rates(tmp_path: Path) -> None:
    path = write_video(tmp_path / "bench.mp4", 60, size=(96, 64), gop=12, pattern="texture")
    result = decode_benchmark(path, clip_len=4, stride=2, clips=4, seed=1, short_side=32)
    assert set(result) == {
        "seek_clips_per_s",
        "from_start_clips_per_s",
        "speedup",
        "num_frames",
        "clips",
    }
    assert result["seek_clips_per_s"] > 0 and result["from_start_clips_per_s"] > 0
    assert result["speedup"] == pytest.approx(
        result["seek_clips_per_s"] / result["from_start_clips_per_s"]
    )
    assert result["num_frames"] == 60

"""Tests for the synthetic video source and its renderer.

The renderer is the no-download default for pretraining and the ground truth of the motion
benchmark, so these tests pin what both rely on: exact determinism, visible motion inside
objects, and motion that goes the way the specs say.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from jepactl.data.synthetic import (
    SHAPES,
    BackgroundSpec,
    ObjectSpec,
    SyntheticVideoSource,
    render_clip,
)

BLACK = BackgroundSpec(color=(0.0, 0.0, 0.0), color2=(0.0, 0.0, 0.0))


def _centroid(frame: torch.Tensor) -> tuple[float, float]:
    """Intensity-weighted (x, y) centroid of a uint8 ``[H, W, 3]`` frame, in pixels.

    Pixel ``j`` spans ``[j, j + 1)``, so its centre is at ``j + 0.5`` as in the renderer.
    """
    weight = frame.double().sum(-1)
    ys, xs = torch.meshgrid(
        torch.arange(frame.shape[0], dtype=torch.float64) + 0.5,
        torch.arange(frame.shape[1], dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    total = weight.sum()
    return float((weight * xs).sum() / total), float((weight * ys).sum() / total)


def test_shape_dtype_label_and_id() -> None:
    source = SyntheticVideoSource(num_frames=8, size=32, seed=3)
    sample = source[5]
    assert sample.clip.shape == (8, 32, 32, 3)
    assert sample.clip.dtype == torch.uint8
    assert 0 <= sample.label < len(SHAPES)
    assert sample.id == "synth-3-5"
    assert len(source) == 1_000_000
    assert source[np.int64(5)].id == "synth-3-5"


def test_render_clip_shape_dtype() -> None:
    disc = ObjectSpec("disc", center=(0.5, 0.5), radius=0.2)
    clip = render_clip([disc], BackgroundSpec(), num_frames=3, size=20)
    assert clip.shape == (3, 20, 20, 3)
    assert clip.dtype == torch.uint8


def test_same_index_is_bit_identical_across_instances() -> None:
    first = SyntheticVideoSource(num_frames=8, size=48, seed=1)
    second = SyntheticVideoSource(num_frames=8, size=48, seed=1)
    a, b = first[7], second[7]
    assert torch.equal(a.clip, b.clip)
    assert (a.label, a.id) == (b.label, b.id)
    assert torch.equal(first[7].clip, a.clip)  # no hidden state advanced by the first call
    assert not torch.equal(first[8].clip, a.clip)


def test_access_order_and_global_rng_do_not_matter() -> None:
    source = SyntheticVideoSource(num_frames=4, size=32, seed=2)
    torch.manual_seed(0)
    np.random.seed(0)
    reference = source[3].clip
    torch.manual_seed(123)
    np.random.seed(123)
    for index in (9, 0, 4):
        source[index]
    assert torch.equal(source[3].clip, reference)


def test_different_seeds_differ() -> None:
    a = SyntheticVideoSource(num_frames=4, size=32, seed=0)[0].clip
    b = SyntheticVideoSource(num_frames=4, size=32, seed=1)[0].clip
    assert not torch.equal(a, b)


def test_thread_count_does_not_change_bytes() -> None:
    """DataLoader workers run single-threaded; they must render what the main process does."""
    source = SyntheticVideoSource(num_frames=8, size=96, seed=4, min_objects=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = [source[i].clip for i in range(3)]
        torch.set_num_threads(4)
        multi = [source[i].clip for i in range(3)]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(s, m) for s, m in zip(single, multi, strict=True))


def test_objects_move() -> None:
    # Without noise the backdrop is static, so every change between frames is an object's.
    quiet = SyntheticVideoSource(num_frames=16, size=64, seed=0, noise_std=0.0)
    changed = [(quiet[i].clip[0] != quiet[i].clip[-1]).any(-1).float().mean() for i in range(20)]
    assert float(np.mean(changed)) > 0.02
    assert sum(c > 0 for c in changed) >= 18

    # With noise, frame-to-frame change must exceed what the same noise gives on its own.
    noisy = SyntheticVideoSource(num_frames=16, size=64, seed=0, noise_std=0.02)
    for index in range(5):
        clip = noisy[index].clip.float()
        _, background = noisy.scene(index)
        noise_only = render_clip((), background, 16, 64).float()
        motion = (clip[1:] - clip[:-1]).abs().mean()
        baseline = (noise_only[1:] - noise_only[:-1]).abs().mean()
        assert motion > baseline


def test_disc_moving_right_has_increasing_centroid_x() -> None:
    disc = ObjectSpec(
        "disc", center=(0.3, 0.5), radius=0.1, velocity=(0.015, 0.0), color=(1.0, 1.0, 1.0)
    )
    clip = render_clip([disc], BLACK, num_frames=12, size=64)
    xs, ys = zip(*(_centroid(frame) for frame in clip), strict=True)
    steps = np.diff(xs)
    assert np.all(steps > 0)
    # Anti-aliasing keeps the centroid sub-pixel accurate: 0.015 * 64 = 0.96 px per frame.
    np.testing.assert_allclose(steps, 0.96, atol=0.05)
    np.testing.assert_allclose(ys, ys[0], atol=1e-6)
    np.testing.assert_allclose(xs[0], 0.3 * 64, atol=0.05)


def test_rotation_of_textured_square_is_visible() -> None:
    square = ObjectSpec(
        "square",
        center=(0.5, 0.5),
        radius=0.3,
        angular_velocity=0.1,
        texture="stripes",
        color=(1.0, 0.0, 0.0),
        color2=(0.0, 0.0, 1.0),
    )
    clip = render_clip([square], BLACK, num_frames=6, size=64)
    for f in range(1, 6):
        assert not torch.equal(clip[f], clip[f - 1])


@pytest.mark.parametrize("texture", ["stripes", "checker", "noise"])
def test_texture_rotates_inside_a_still_disc(texture: str) -> None:
    # A disc's outline is the same at every angle, so any change comes from the texture.
    disc = ObjectSpec(
        "disc",
        center=(0.5, 0.5),
        radius=0.4,
        angular_velocity=0.2,
        texture=texture,
        color=(1.0, 1.0, 0.0),
        color2=(0.0, 0.0, 1.0),
        texture_seed=5,
    )
    clip = render_clip([disc], BLACK, num_frames=4, size=64).float()
    inside_change = (clip[1:] - clip[:-1]).abs().mean()
    assert inside_change > 5.0


def test_texture_translates_with_the_object() -> None:
    # Centre and speed are exact binary fractions (16 px, 4 px per frame), so the moved frame
    # is the first one shifted by exactly 4 pixels.
    disc = ObjectSpec(
        "disc",
        center=(0.25, 0.5),
        radius=0.2,
        velocity=(0.0625, 0.0),
        texture="checker",
        color=(1.0, 0.5, 0.0),
        color2=(0.0, 0.5, 1.0),
    )
    clip = render_clip([disc], BLACK, num_frames=2, size=64)
    assert torch.equal(clip[1, :, 4:], clip[0, :, :-4])


def test_later_objects_are_in_front() -> None:
    back = ObjectSpec("square", center=(0.5, 0.5), radius=0.4, color=(1.0, 0.0, 0.0))
    front = ObjectSpec("disc", center=(0.5, 0.5), radius=0.1, color=(0.0, 1.0, 0.0))
    clip = render_clip([back, front], BLACK, num_frames=1, size=32)
    assert clip[0, 16, 16].tolist() == [0, 255, 0]
    assert clip[0, 16, 8].tolist() == [255, 0, 0]


def test_noise_std_is_in_intensity_units() -> None:
    grey = BackgroundSpec(noise_std=0.05, noise_seed=1)
    clip = render_clip((), grey, num_frames=4, size=64).float()
    assert abs(clip.std().item() - 0.05 * 255) < 0.05 * 255 * 0.05
    assert abs(clip.mean().item() - 0.5 * 255) < 0.5


def test_label_is_the_shape_of_the_largest_object() -> None:
    single = SyntheticVideoSource(num_frames=2, size=16, seed=0, max_objects=1)
    for index in range(10):
        (obj,), _ = single.scene(index)
        assert single[index].label == SHAPES.index(obj.shape)
    several = SyntheticVideoSource(num_frames=2, size=16, seed=0, min_objects=3)
    labels = set()
    for index in range(100):
        objects, _ = several.scene(index)
        label = several[index].label
        assert label in {SHAPES.index(o.shape) for o in objects}
        labels.add(label)
    assert labels == set(range(len(SHAPES)))


def test_random_objects_stay_in_view_and_in_size_range() -> None:
    num_frames = 16
    source = SyntheticVideoSource(num_frames=num_frames, size=32, seed=0)
    last = num_frames - 1
    for index in range(50):
        objects, background = source.scene(index)
        assert background.noise_std == source.noise_std
        for obj in objects:
            for f in (0, last):
                x = obj.center[0] + f * obj.velocity[0]
                y = obj.center[1] + f * obj.velocity[1]
                assert 0.15 <= x <= 0.85 and 0.15 <= y <= 0.85
                assert 0.04 - 1e-9 <= obj.radius * obj.scale_rate**f <= 0.15 + 1e-9


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_frames": 0},
        {"size": 4},
        {"seed": -1},
        {"length": 0},
        {"min_objects": 0},
        {"min_objects": 3, "max_objects": 2},
        {"noise_std": -0.1},
        {"noise_std": float("nan")},
    ],
)
def test_source_argument_validation(kwargs: dict[str, Any]) -> None:
    arguments = {"num_frames": 4, "size": 32, **kwargs}
    with pytest.raises(ValueError):
        SyntheticVideoSource(**arguments)


def test_index_out_of_range() -> None:
    source = SyntheticVideoSource(num_frames=2, size=16, length=10)
    source[9]
    for index in (-1, 10):
        with pytest.raises(IndexError):
            source[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": "hexagon"},
        {"texture": "plaid"},
        {"radius": 0.0},
        {"scale_rate": -1.0},
        {"color": (1.5, 0.0, 0.0)},
        {"color2": (0.0, 0.0)},
        {"velocity": (float("inf"), 0.0)},
        {"texture_seed": -1},
    ],
)
def test_object_spec_validation(kwargs: dict[str, Any]) -> None:
    arguments = {"shape": "disc", "center": (0.5, 0.5), "radius": 0.1, **kwargs}
    with pytest.raises(ValueError):
        ObjectSpec(**arguments)


def test_background_and_render_validation() -> None:
    with pytest.raises(ValueError):
        BackgroundSpec(noise_std=-1.0)
    with pytest.raises(ValueError):
        BackgroundSpec(color=(0.0, 0.0, 2.0))
    with pytest.raises(ValueError):
        render_clip((), BackgroundSpec(), num_frames=0, size=8)
    with pytest.raises(ValueError):
        render_clip((), BackgroundSpec(), num_frames=1, size=0)


def test_frame_step_samples_the_native_trajectory() -> None:
    obj = ObjectSpec(
        shape="square",
        center=(0.3, 0.4),
        radius=0.12,
        velocity=(0.02, 0.01),
        angular_velocity=0.1,
        texture="stripes",
    )
    bg = BackgroundSpec()
    dense = render_clip([obj], bg, num_frames=8, size=32)
    strided = render_clip([obj], bg, num_frames=4, size=32, frame_step=2)
    assert torch.equal(strided, dense[::2])
    src = SyntheticVideoSource(num_frames=4, size=32, frame_stride=2, noise_std=0.0)
    assert src[3].clip.shape == (4, 32, 32, 3)

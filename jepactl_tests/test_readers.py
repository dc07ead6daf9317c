"""Dataset readers: tiny fake layouts (empty placeholder files; readers never decode)."""

from __future__ import annotations

import inspect
import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from jepactl.config import ConfigError
from jepactl.data.readers import (
    READERS,
    TREES,
    DatasetIndex,
    DatasetLayoutError,
    Entry,
    class_folders,
    csv_index,
    data_root,
    diving48,
    imagenet100,
    imagenet100_classes,
    read_dataset,
    ssv2,
    ucf101,
)


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_json(path: Path, data: object) -> Path:
    return write(path, json.dumps(data))


def labels(index: DatasetIndex) -> dict[str, int]:
    return {e.id: e.label for e in index.entries}


def assert_layout_error(exc: pytest.ExceptionInfo[DatasetLayoutError], path: Path) -> None:
    """The summary line names ``path``; the expected tree follows."""
    message = str(exc.value)
    first, *rest = message.splitlines()
    assert str(path) in first
    assert "expected layout:" in message
    assert exc.value.tree and exc.value.tree.splitlines()[0].strip() in "\n".join(rest)


# --------------------------------------------------------------------------------------
# UCF-101
# --------------------------------------------------------------------------------------

UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "BabyCrawling"]


def make_ucf(base: Path, video_dir: Path | None = None, ann_dir: Path | None = None) -> None:
    video_dir = video_dir or base / "UCF-101"
    ann_dir = ann_dir or base / "ucfTrainTestlist"
    for cls in UCF_CLASSES:
        for g in (1, 2, 8):
            touch(video_dir, f"{cls}/v_{cls}_g{g:02d}_c01.avi")
    # Official files use CRLF line endings.
    write(ann_dir / "classInd.txt", "".join(f"{i} {c}\r\n" for i, c in enumerate(UCF_CLASSES, 1)))
    for fold in (1, 2, 3):
        train = [f"{c}/v_{c}_g08_c01.avi {i}" for i, c in enumerate(UCF_CLASSES, 1)]
        train.append("Archery/v_Archery_g09_c01.avi 2")  # listed, not on disk
        test = [f"{c}/v_{c}_g0{fold if fold < 3 else 1}_c01.avi" for c in UCF_CLASSES]
        write(ann_dir / f"trainlist0{fold}.txt", "\r\n".join(train) + "\r\n")
        write(ann_dir / f"testlist0{fold}.txt", "\r\n".join(test) + "\r\n")


def test_ucf101_train_and_test(tmp_path: Path) -> None:
    make_ucf(tmp_path)
    train = ucf101(tmp_path, "train", fold=1)
    assert train.classes == UCF_CLASSES
    assert train.kind == "video" and train.split == "train"
    assert labels(train) == {
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01": 0,
        "Archery/v_Archery_g08_c01": 1,
        "BabyCrawling/v_BabyCrawling_g08_c01": 2,
    }
    assert train.missing == [str(tmp_path / "UCF-101/Archery/v_Archery_g09_c01.avi")]
    entry = train.entries[1]
    assert entry.path == str(tmp_path / "UCF-101/Archery/v_Archery_g08_c01.avi")
    assert Path(entry.path).is_file()

    test = ucf101(tmp_path, "test", fold=2)  # labels from the folder names
    assert labels(test) == {f"{c}/v_{c}_g02_c01": i for i, c in enumerate(UCF_CLASSES)}
    assert test.missing == []


def test_ucf101_root_is_class_folder_folder(tmp_path: Path) -> None:
    # Lists next to the folder of class folders ...
    make_ucf(tmp_path)
    index = ucf101(tmp_path / "UCF-101", "test")
    assert len(index.entries) == 3
    # ... or inside it.
    other = tmp_path / "flat"
    make_ucf(other, video_dir=other)
    index = ucf101(other, "train", fold=3)
    assert index.entries[0].path == str(other / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")


def test_ucf101_layout_errors(tmp_path: Path) -> None:
    make_ucf(tmp_path)
    (tmp_path / "ucfTrainTestlist/classInd.txt").unlink()
    with pytest.raises(DatasetLayoutError) as exc:
        ucf101(tmp_path)
    assert_layout_error(exc, tmp_path / "ucfTrainTestlist/classInd.txt")
    assert "ucfTrainTestlist/" in str(exc.value) and "classInd.txt" in str(exc.value)

    make_ucf(tmp_path)
    write(
        tmp_path / "ucfTrainTestlist/testlist01.txt",
        "Archery/v_Archery_g01_c01.avi\nArchry/x.avi\n",
    )
    with pytest.raises(DatasetLayoutError, match=r"line 2: class folder 'Archry'.*'Archery'"):
        ucf101(tmp_path, "test")

    write(tmp_path / "ucfTrainTestlist/trainlist01.txt", "Archery/v_Archery_g01_c01.avi 7\n")
    with pytest.raises(DatasetLayoutError, match=r"line 1: label '7'.*1\.\.3"):
        ucf101(tmp_path)

    empty = tmp_path / "elsewhere/empty"  # (tmp_path itself holds a ucfTrainTestlist/)
    empty.mkdir(parents=True)
    with pytest.raises(DatasetLayoutError) as exc:
        ucf101(empty)
    assert_layout_error(exc, empty)

    with pytest.raises(DatasetLayoutError) as exc:
        ucf101(tmp_path / "nowhere")
    assert "does not exist" in str(exc.value)


def test_ucf101_wrong_root_is_an_error_not_all_missing(tmp_path: Path) -> None:
    make_ucf(tmp_path)
    for video in (tmp_path / "UCF-101").rglob("*.avi"):
        video.unlink()
    with pytest.raises(DatasetLayoutError, match="none of the 4 files listed"):
        ucf101(tmp_path)


def test_ucf101_bad_arguments(tmp_path: Path) -> None:
    make_ucf(tmp_path)
    with pytest.raises(ConfigError, match="split 'tst'; did you mean 'test'"):
        ucf101(tmp_path, "tst")
    with pytest.raises(ConfigError, match="fold must be 1, 2 or 3"):
        ucf101(tmp_path, fold=4)


# --------------------------------------------------------------------------------------
# Something-Something v2
# --------------------------------------------------------------------------------------

SSV2_LABELS = {
    "Approaching something with your camera": "0",
    "Putting something on a surface": "1",
    "Pushing something from left to right": "2",
}
SSV2_ITEMS = {
    "train": [
        ("1", "Approaching [something] with your camera"),
        ("2", "Putting [something] on a surface"),
        ("3", "Pushing [something] from left to right"),
        ("4", "Putting [something] on a surface"),
    ],
    "validation": [("10", "Pushing [something] from left to right")],
}


def make_ssv2(video_dir: Path, ann_dir: Path, long_names: bool) -> None:
    prefix = "something-something-v2-" if long_names else ""
    write_json(ann_dir / f"{prefix}labels.json", SSV2_LABELS)
    for split, items in SSV2_ITEMS.items():
        data = [
            {"id": i, "label": t.replace("[something]", "a cup"), "template": t, "placeholders": []}
            for i, t in items
        ]
        write_json(ann_dir / f"{prefix}{split}.json", data)
        touch(video_dir, *(f"{i}.webm" for i, _ in items if i != "4"))


def test_ssv2_short_names_in_annotations_folder(tmp_path: Path) -> None:
    make_ssv2(tmp_path / "20bn-something-something-v2", tmp_path / "annotations", False)
    train = ssv2(tmp_path)
    assert train.classes == list(SSV2_LABELS)
    assert labels(train) == {"1": 0, "2": 1, "3": 2}
    assert train.missing == [str(tmp_path / "20bn-something-something-v2/4.webm")]
    assert train.entries[0].path == str(tmp_path / "20bn-something-something-v2/1.webm")
    val = ssv2(tmp_path, "val")
    assert val.split == "validation" and labels(val) == {"10": 2}


def test_ssv2_long_names_and_videos_in_root(tmp_path: Path) -> None:
    make_ssv2(tmp_path, tmp_path, True)
    train = ssv2(tmp_path, "train")
    assert labels(train) == {"1": 0, "2": 1, "3": 2}
    assert train.entries[0].path == str(tmp_path / "1.webm")
    assert labels(ssv2(tmp_path, "validation")) == {"10": 2}


def test_ssv2_converted_videos_and_labels_folder(tmp_path: Path) -> None:
    make_ssv2(tmp_path / "videos_unused", tmp_path / "labels", False)
    touch(tmp_path / "20bn-something-something-v2", "1.mp4", "2.webm", "2.mp4", "3.mp4")
    index = ssv2(tmp_path)
    paths = {e.id: Path(e.path).name for e in index.entries}
    assert paths == {"1": "1.mp4", "2": "2.webm", "3": "3.mp4"}


def test_ssv2_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as exc:
        ssv2(tmp_path)
    assert_layout_error(exc, tmp_path / "labels.json")
    assert "something-something-v2-labels.json" in str(exc.value)

    make_ssv2(tmp_path, tmp_path, False)
    items = [{"id": "1", "template": "Approaching [something] with the camera"}]
    write_json(tmp_path / "train.json", items)
    with pytest.raises(DatasetLayoutError, match="did you mean 'Approaching something with your"):
        ssv2(tmp_path)
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        ssv2(tmp_path, "test")


# --------------------------------------------------------------------------------------
# Diving-48
# --------------------------------------------------------------------------------------

DIVING_VOCAB = [
    [["Back"], ["15som"], ["05Twis"], ["FREE"]],
    [["Back"], ["15som"], ["15Twis"], ["FREE"]],
    [["Inward"], ["25som"], ["NoTwis"], ["PIKE"]],
]


def make_diving48(base: Path) -> None:
    write_json(base / "Diving48_vocab.json", DIVING_VOCAB)
    train = [
        {"vid_name": "-mmq0PT-u8k_00155", "label": 2, "start_frame": 0, "end_frame": 103},
        {"vid_name": "-mmq0PT-u8k_00156", "label": 0, "start_frame": 0, "end_frame": 80},
        {"vid_name": "gone_00001", "label": 1, "start_frame": 0, "end_frame": 50},
    ]
    test = [{"vid_name": "zzz_00001", "label": 1, "start_frame": 0, "end_frame": 60}]
    write_json(base / "Diving48_V2_train.json", train)
    write_json(base / "Diving48_V2_test.json", test)
    touch(base / "rgb", "-mmq0PT-u8k_00155.mp4", "-mmq0PT-u8k_00156.mp4", "zzz_00001.mp4")


def test_diving48(tmp_path: Path) -> None:
    make_diving48(tmp_path)
    train = diving48(tmp_path)
    assert train.classes == [
        "Back 15som 05Twis FREE",
        "Back 15som 15Twis FREE",
        "Inward 25som NoTwis PIKE",
    ]
    assert labels(train) == {"-mmq0PT-u8k_00155": 2, "-mmq0PT-u8k_00156": 0}
    assert train.missing == [str(tmp_path / "rgb/gone_00001.mp4")]
    assert train.entries[0].path == str(tmp_path / "rgb/-mmq0PT-u8k_00155.mp4")
    assert labels(diving48(tmp_path, "test")) == {"zzz_00001": 1}


def test_diving48_errors(tmp_path: Path) -> None:
    make_diving48(tmp_path)
    os.rename(tmp_path / "Diving48_V2_test.json", tmp_path / "Diving48_test.json")
    with pytest.raises(DatasetLayoutError, match=r"found the V1 Diving48_test\.json") as exc:
        diving48(tmp_path, "test")
    assert_layout_error(exc, tmp_path / "Diving48_V2_test.json")

    write_json(tmp_path / "Diving48_V2_train.json", [{"vid_name": "a", "label": 3}])
    with pytest.raises(DatasetLayoutError, match=r"label 3 is not a class.*0\.\.2"):
        diving48(tmp_path)

    write(tmp_path / "Diving48_V2_train.json", "[{")
    with pytest.raises(DatasetLayoutError, match="not valid JSON"):
        diving48(tmp_path)


# --------------------------------------------------------------------------------------
# ImageNet-100
# --------------------------------------------------------------------------------------


def test_shipped_class_list() -> None:
    wnids = imagenet100_classes()
    assert len(wnids) == 100 and len(set(wnids)) == 100
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert wnids[0] == "n02869837"  # the standard order, not sorted
    assert imagenet100_classes() is not imagenet100_classes()  # callers may mutate theirs


def other_wnids(n: int) -> list[str]:
    """``n`` ImageNet-1k-style wnids that are not in the 100-class list."""
    shipped = set(imagenet100_classes())
    return [w for w in (f"n{i:08d}" for i in range(1, 1000)) if w not in shipped][:n]


def test_imagenet100_filters_a_1k_root(tmp_path: Path) -> None:
    wnids = imagenet100_classes()
    for wnid in [*wnids, *other_wnids(3)]:
        touch(tmp_path / "train" / wnid, f"{wnid}_1.JPEG")
    touch(tmp_path / "train" / wnids[5], "b.jpg", "c.jpeg", "d.PNG", "notes.txt")
    train = imagenet100(tmp_path)
    assert train.kind == "image" and train.classes == wnids
    assert len(train.entries) == 100 + 3
    assert {e.label for e in train.entries} == set(range(100))
    assert [e.id for e in train.entries if e.label == 5] == [
        f"{wnids[5]}/b",
        f"{wnids[5]}/c",
        f"{wnids[5]}/d",
        f"{wnids[5]}/{wnids[5]}_1",
    ]

    (tmp_path / "train" / wnids[7] / f"{wnids[7]}_1.JPEG").unlink()
    (tmp_path / "train" / wnids[7]).rmdir()
    with pytest.raises(DatasetLayoutError, match="1 of the 100 class folders") as exc:
        imagenet100(tmp_path)
    assert_layout_error(exc, tmp_path / "train")


def test_imagenet100_flat_val_with_label_files(tmp_path: Path) -> None:
    classes = ["n01440764", "n01443537"]
    touch(tmp_path / "train/n01440764", "a.JPEG")
    touch(tmp_path / "train/n01443537", "b.JPEG")
    touch(tmp_path / "val", *(f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 5)))
    write(
        tmp_path / "val_labels.txt",
        "ILSVRC2012_val_00000001.JPEG n01440764\n"
        "ILSVRC2012_val_00000002.JPEG n09999999\n"  # another class: skipped
        "ILSVRC2012_val_00000003.JPEG n01443537\n"
        "ILSVRC2012_val_00000009.JPEG n01443537\n",  # not on disk
    )
    val = imagenet100(tmp_path, "val", classes=classes)
    assert labels(val) == {"ILSVRC2012_val_00000001": 0, "ILSVRC2012_val_00000003": 1}
    assert val.missing == [str(tmp_path / "val/ILSVRC2012_val_00000009.JPEG")]

    (tmp_path / "val_labels.txt").unlink()
    write(
        tmp_path / "LOC_val_solution.csv",
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000004,n01443537 1 2 3 4 n01443537 5 6 7 8\n"
        "ILSVRC2012_val_00000002,n01440764 1 2 3 4\n"
        "ILSVRC2012_val_00000001,n02000000 1 2 3 4\n",
    )
    val = imagenet100(tmp_path, "validation", classes=classes)
    assert val.split == "val"
    assert labels(val) == {"ILSVRC2012_val_00000002": 0, "ILSVRC2012_val_00000004": 1}

    write(tmp_path / "LOC_val_solution.csv", "ILSVRC2012_val_00000004,490\n")
    with pytest.raises(DatasetLayoutError, match="line 1: expected an image name and a wnid"):
        imagenet100(tmp_path, "val", classes=classes)

    (tmp_path / "LOC_val_solution.csv").unlink()
    with pytest.raises(
        DatasetLayoutError, match=r"val_labels\.txt or LOC_val_solution\.csv"
    ) as exc:
        imagenet100(tmp_path, "val", classes=classes)
    assert_layout_error(exc, tmp_path / "val")


def test_imagenet100_val_class_folders(tmp_path: Path) -> None:
    classes = ["n01440764", "n01443537"]
    touch(tmp_path / "val/n01440764", "x.JPEG")
    touch(tmp_path / "val/n01443537", "y.jpg", "z.JPEG")
    val = imagenet100(tmp_path, "val", classes=classes)
    assert labels(val) == {"n01440764/x": 0, "n01443537/y": 1, "n01443537/z": 1}


# --------------------------------------------------------------------------------------
# CSV index and class folders
# --------------------------------------------------------------------------------------


def test_csv_index(tmp_path: Path) -> None:
    touch(tmp_path / "videos", "a.mp4", "b c.mp4", "img.jpg")
    touch(tmp_path / "data/rel", "r.mp4")
    csv = write(
        tmp_path / "index.csv",
        f"{tmp_path}/videos/a.mp4 0\n"
        "\n"
        f"{tmp_path}/videos/b c.mp4::3\n"
        f"# a comment\n"
        f"{tmp_path}/videos/img.jpg\t2\n"
        "data/rel/r.mp4 1\n"
        f"{tmp_path}/videos/gone.mp4 1\n",
    )
    index = csv_index(csv)
    assert index.kind == "video" and index.classes == ["0", "1", "2", "3"]
    assert [(Path(e.path).name, e.label) for e in index.entries] == [
        ("a.mp4", 0),
        ("b c.mp4", 3),
        ("img.jpg", 2),
        ("r.mp4", 1),
    ]
    assert index.entries[3] == Entry(str(tmp_path / "data/rel/r.mp4"), 1, "data/rel/r")
    assert index.missing == [f"{tmp_path}/videos/gone.mp4"]

    # Relative rows against an explicit root.
    other = write(tmp_path / "lists/other.csv", "rel/r.mp4 5\n")
    assert [e.path for e in csv_index(other, root=tmp_path / "data").entries] == [
        str(tmp_path / "data/rel/r.mp4")
    ]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("/v/a.mp4 x", "line 2: label 'x' is not an integer"),
        ("/v/a.mp4", r"line 2: expected '<path> <label>'"),
        ("/path with spaces/a.mp4 1", "line 2: path .* has spaces; write '<path>::<label>'"),
        ("/v/a.mp4 -1", "line 2: label -1 is negative"),
        ("::4", "line 2: no path before the label"),
    ],
)
def test_csv_bad_lines(tmp_path: Path, row: str, match: str) -> None:
    touch(tmp_path, "a.mp4")
    csv = write(tmp_path / "index.csv", f"a.mp4 0\n{row}\n")
    with pytest.raises(DatasetLayoutError, match=match) as exc:
        csv_index(csv)
    assert_layout_error(exc, csv)


def test_csv_missing_file_and_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"CSV index .* not found") as exc:
        csv_index(tmp_path / "nope.csv")
    assert_layout_error(exc, tmp_path / "nope.csv")
    csv = write(tmp_path / "index.csv", "a.mp4 0\nb.mp4 1\n")
    with pytest.raises(DatasetLayoutError, match="none of the 2 files listed"):
        csv_index(csv)


def test_class_folders(tmp_path: Path) -> None:
    touch(tmp_path / "zebra", "1.mp4", "2.AVI", "skip.txt")
    touch(tmp_path / "ant", "3.webm")
    touch(tmp_path / ".cache", "x.mp4")
    index = class_folders(tmp_path)
    assert index.classes == ["ant", "zebra"] and index.kind == "video"
    assert labels(index) == {"ant/3": 0, "zebra/1": 1, "zebra/2": 1}

    images = tmp_path / "images"
    touch(images / "train/cat", "a.JPG")
    touch(images / "train/dog", "b.png")
    index = class_folders(images, split="train", name="pets")
    assert index.kind == "image" and index.name == "pets" and index.split == "train"
    assert class_folders(tmp_path, extensions=("mp4",)).entries[0].id == "zebra/1"

    with pytest.raises(DatasetLayoutError, match="no class folders"):
        class_folders(tmp_path / "zebra")
    # The recipe's default split (train) reads a plain root; another split needs its folder.
    assert class_folders(tmp_path, split="train").classes == ["ant", "images", "zebra"]
    with pytest.raises(DatasetLayoutError, match="no val/ folder in"):
        class_folders(tmp_path, split="val")


# --------------------------------------------------------------------------------------
# Registry, root resolution, documentation, speed
# --------------------------------------------------------------------------------------


def test_read_dataset_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_diving48(tmp_path / "data/diving48")
    monkeypatch.delenv("JEPACTL_DATA", raising=False)
    with pytest.raises(DatasetLayoutError) as exc:
        read_dataset("diving48", None)
    first = str(exc.value).splitlines()[0]
    for hint in ("data.roots.diving48", "--set data.roots.diving48=", "JEPACTL_DATA"):
        assert hint in first
    assert "Diving48_V2_train.json" in str(exc.value)

    monkeypatch.setenv("JEPACTL_DATA", str(tmp_path / "data"))
    index = read_dataset("diving48", None, split="test")
    assert index.root == tmp_path / "data/diving48" and len(index.entries) == 1
    assert data_root("diving48") == tmp_path / "data/diving48"
    # An explicit root wins over the environment.
    assert read_dataset("diving48", str(tmp_path / "data/diving48")).split == "train"

    with pytest.raises(DatasetLayoutError, match=r"ssv2 does not exist.*JEPACTL_DATA=") as exc:
        read_dataset("ssv2", None)
    assert exc.value.path == tmp_path / "data/ssv2"
    with pytest.raises(DatasetLayoutError, match="no CSV file given"):
        read_dataset("csv", None)


def test_read_dataset_names_and_options(tmp_path: Path) -> None:
    assert set(READERS) == {"ucf101", "ssv2", "diving48", "in100", "csv", "folders"}
    with pytest.raises(ConfigError, match="did you mean 'ssv2'"):
        read_dataset("ssv", tmp_path)
    with pytest.raises(ConfigError, match="no option 'folds'; did you mean 'fold'"):
        read_dataset("ucf101", tmp_path, folds=2)
    make_ucf(tmp_path)
    assert read_dataset("ucf101", tmp_path, split="test", fold=2).split == "test"
    csv = write(tmp_path / "i.csv", "UCF-101/Archery/v_Archery_g01_c01.avi 4\n")
    assert read_dataset("csv", csv).entries[0].label == 4
    # Every reader takes `split` (the loader and data-check pass the recipe's data.split).
    assert read_dataset("csv", csv, split="train").split == "train"
    for name, reader in READERS.items():
        assert "split" in inspect.signature(reader).parameters, name


def test_every_reader_documents_its_tree() -> None:
    for name, reader in READERS.items():
        doc = inspect.getdoc(reader) or ""
        lines = [line.strip() for line in doc.splitlines()]
        for tree_line in TREES[name].splitlines():
            assert tree_line.strip() in lines, f"{name}: {tree_line!r} not in the docstring"


def test_layout_error_is_a_config_error() -> None:
    err = DatasetLayoutError("x: y is missing", path="/y", tree="<root>/\n  a/\n")
    assert isinstance(err, ConfigError)
    assert str(err) == "x: y is missing\nexpected layout:\n  <root>/\n    a/"
    assert err.summary == "x: y is missing" and err.path == Path("/y")


def count_stats(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = os.stat

    def counting(*args: object, **kwargs: object) -> os.stat_result:
        calls[0] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counting)
    return calls


def ssv2_items(n: int) -> Iterable[dict[str, str]]:
    templates = [k.replace("something", "[something]", 1) for k in SSV2_LABELS]
    return ({"id": str(i), "template": templates[i % 3]} for i in range(n))


def test_indexing_does_not_stat_per_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_json(tmp_path / "labels.json", SSV2_LABELS)
    write_json(tmp_path / "train.json", list(ssv2_items(2000)))
    touch(tmp_path / "20bn-something-something-v2", *(f"{i}.webm" for i in range(0, 2000, 2)))
    touch(tmp_path / "videos", *(f"{i}.mp4" for i in range(500)))
    csv = write(tmp_path / "i.csv", "".join(f"videos/{i}.mp4 {i % 7}\n" for i in range(1000)))
    calls = count_stats(monkeypatch)
    index = ssv2(tmp_path)
    assert len(index.entries) == 1000 and len(index.missing) == 1000
    index = csv_index(csv)
    assert len(index.entries) == 500 and len(index.missing) == 500
    assert calls[0] < 20


def test_indexing_200k_entries_is_fast(tmp_path: Path) -> None:
    write_json(tmp_path / "labels.json", SSV2_LABELS)
    write_json(tmp_path / "train.json", list(ssv2_items(200_000)))
    touch(tmp_path / "20bn-something-something-v2", *(f"{i}.webm" for i in range(200)))
    start = time.perf_counter()
    index = ssv2(tmp_path)
    elapsed = time.perf_counter() - start
    assert len(index.entries) == 200 and len(index.missing) == 199_800
    assert elapsed < 5.0, f"indexing 200k entries took {elapsed:.1f} s"

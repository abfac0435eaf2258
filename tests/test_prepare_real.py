"""PASCAL-5i and COCO-20i preparation on tiny fabricated trees in the official formats."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils

from fsslib.data.benchmarks import COCO_CLASSES, PASCAL, get_benchmark
from fsslib.data import coco, pascal
from fsslib.data.coco import prepare_coco, semantic_mask
from fsslib.data.episodes import Source
from fsslib.data.layout import MARKER, read_class_index
from fsslib.data.pascal import pascal_splits, prepare_pascal
from fsslib.data.prepare import main
from fsslib.errors import DatasetNotFoundError, InvalidMaskError

from fabricate import coco_annotation, rectangle, save_jpeg, save_palette_png

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2

H, W = 32, 40
VOC_SPLITS = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033", "2007_000042"]}
# 2007_000039 is in VOC train and SBD train; 2007_000033 / 2007_000042 are VOC val images that
# SBD lists for training; 2008_000002 is in both SBD lists.
SBD_SPLITS = {
    "train": ["2007_000039", "2008_000002", "2007_000033", "2008_000004"],
    "val": ["2008_000003", "2007_000042", "2008_000002"],
}
# VOC's detection train split (ImageSets/Main/train.txt): 2008_000004 (SBD train) is left in its
# val split, 2008_000003 (SBD val) is in it, and so, against the official lists, is the VOC val
# image 2007_000033; 2007_000099 is a detection-only image.
VOC_MAIN_TRAIN = ["2007_000039", "2008_000002", "2008_000003", "2007_000033", "2007_000099"]
VOC_CLASSES = {"2007_000032": (1, 15), "2007_000039": (7, 7), "2007_000033": (5, 20), "2007_000042": (12, 3)}
SBD_CLASSES = {
    "2007_000039": (9, 9), "2008_000002": (2, 18), "2007_000033": (6, 6), "2008_000003": (20, 14), "2007_000042": (11, 11),
    "2008_000004": (4, 16),
}
# pfenet = VOC train ∪ (SBD train ∩ Main train) minus VOC val; trainaug = VOC train ∪ SBD train ∪ SBD val minus VOC val
PASCAL_TRAIN = {
    "pfenet": ["2007_000032", "2007_000039", "2008_000002"],
    "trainaug": ["2007_000032", "2007_000039", "2008_000002", "2008_000003", "2008_000004"],
}
PASCAL_VAL = ["2007_000033", "2007_000042"]
PASCAL_PRESENCE = {
    "2007_000032": {1: 80, 15: 160}, "2007_000039": {7: 240}, "2008_000002": {2: 80, 18: 160},
    "2008_000003": {20: 80, 14: 160}, "2008_000004": {4: 80, 16: 160}, "2007_000033": {5: 80, 20: 160},
    "2007_000042": {12: 80, 3: 160},
}


def pascal_label(first: int, second: int, void_boundaries: bool) -> np.ndarray:
    """(H, W) uint8: an 8x10 block of ``first``, a 10x16 block of ``second``, optional 255 edges."""
    label = np.zeros((H, W), dtype=np.uint8)
    label[2:10, 4:14] = first
    label[16:26, 20:36] = second
    if void_boundaries:
        label[10, 4:14] = 255
        label[15, 20:36] = 255
    return label


@pytest.fixture
def pascal_inputs(tmp_path: Path) -> dict[str, Path]:
    """Extracted folders and archives of a tiny VOC2012 and SBD."""
    voc = tmp_path / "voc_extracted"
    voc2012 = voc / "VOCdevkit" / "VOC2012"
    for split, stems in VOC_SPLITS.items():
        (voc2012 / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc2012 / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    (voc2012 / "ImageSets" / "Main").mkdir(parents=True)
    (voc2012 / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{s}\n" for s in VOC_MAIN_TRAIN))
    (voc2012 / "ImageSets" / "Main" / "aeroplane_train.txt").write_text("2007_000039 -1\n")
    for index, (stem, classes) in enumerate(VOC_CLASSES.items()):
        save_jpeg(voc2012 / "JPEGImages" / f"{stem}.jpg", H, W, seed=index)
        save_palette_png(voc2012 / "SegmentationClass" / f"{stem}.png", pascal_label(*classes, void_boundaries=True))
    save_jpeg(voc2012 / "JPEGImages" / "2007_000099.jpg", H, W, seed=99)  # detection-only image
    sbd = tmp_path / "sbd_extracted"
    dataset = sbd / "benchmark_RELEASE" / "dataset"
    for index, (stem, classes) in enumerate(SBD_CLASSES.items()):
        (dataset / "cls").mkdir(parents=True, exist_ok=True)
        label = pascal_label(*classes, void_boundaries=False)
        scipy.io.savemat(dataset / "cls" / f"{stem}.mat",
                         {"GTcls": {"Segmentation": label, "CategoriesPresent": np.unique(label[label > 0])}})
        save_jpeg(dataset / "img" / f"{stem}.jpg", H, W, seed=10 + index)
    (dataset / "inst").mkdir()
    scipy.io.savemat(dataset / "inst" / "2008_000002.mat", {"GTinst": {"Segmentation": np.full((H, W), 99, np.uint8)}})
    for split, stems in SBD_SPLITS.items():
        (dataset / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    voc_tar, sbd_tgz = tmp_path / "VOCtrainval_11-May-2012.tar", tmp_path / "benchmark.tgz"
    with tarfile.open(voc_tar, "w") as tar:
        tar.add(voc / "VOCdevkit", arcname="VOCdevkit")
    with tarfile.open(sbd_tgz, "w:gz") as tar:
        tar.add(sbd / "benchmark_RELEASE", arcname="benchmark_RELEASE")
    return {"voc": voc, "sbd": sbd, "voc_tar": voc_tar, "sbd_tgz": sbd_tgz, "voc2012": voc2012, "dataset": dataset}


def assert_pascal_tree(out: Path, inputs: dict[str, Path], train_list: str = "pfenet") -> None:
    train = PASCAL_TRAIN[train_list]
    for split, stems in (("train", train), ("val", PASCAL_VAL)):
        assert (out / "lists" / f"{split}.txt").read_text() == "".join(
            f"JPEGImages/{s}.jpg SegmentationClassAug/{s}.png\n" for s in stems
        )
        assert read_class_index(out, split, "") == {stem: PASCAL_PRESENCE[stem] for stem in stems}
    assert sorted(p.stem for p in (out / "JPEGImages").iterdir()) == sorted(train + PASCAL_VAL)
    for stem in train + PASCAL_VAL:
        with Image.open(out / "SegmentationClassAug" / f"{stem}.png") as handle:
            assert handle.mode == "L"
            label = np.asarray(handle)
        if stem in VOC_CLASSES:  # VOC annotation wins over SBD's, with its 255 boundaries
            expected, image = pascal_label(*VOC_CLASSES[stem], True), inputs["voc2012"] / "JPEGImages" / f"{stem}.jpg"
        else:
            expected, image = pascal_label(*SBD_CLASSES[stem], False), inputs["dataset"] / "img" / f"{stem}.jpg"
        np.testing.assert_array_equal(label, expected)
        assert (out / "JPEGImages" / f"{stem}.jpg").read_bytes() == image.read_bytes()
    marker = json.loads((out / MARKER).read_text())
    assert marker == {"benchmark": "pascal", "train_list": train_list, "images": {"train": len(train), "val": 2}}


def leftovers(out: Path) -> list[Path]:
    """Temporary folders that a prepare run left next to ``out``."""
    return sorted(out.parent.glob(".fsslib-pascal-*")) + sorted(out.parent.glob(f".{out.name}.partial-*"))


@pytest.mark.slow
def test_prepare_pascal_from_archives_via_cli(pascal_inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    main(["pascal", "--voc", str(pascal_inputs["voc_tar"]), "--sbd", str(pascal_inputs["sbd_tgz"]), "--out", str(out)])
    assert_pascal_tree(out, pascal_inputs)  # PFENet's list by default
    assert "train 3 images, val 2 images (train list 'pfenet')" in capsys.readouterr().out
    assert leftovers(out) == []  # the unpacked members and the staging folder are gone
    source = Source(PASCAL, "train", root=out)
    image, label = source.load("2007_000039")
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, pascal_label(7, 7, True))
    assert source.images_with(7, min_pixels=1) == ["2007_000039"]
    assert Source(PASCAL, "val", root=out).names == PASCAL_VAL


def test_prepare_pascal_trainaug_list(pascal_inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "trainaug"
    main(["pascal", "--voc", str(pascal_inputs["voc_tar"]), "--sbd", str(pascal_inputs["sbd_tgz"]), "--out", str(out),
          "--pascal-train-list", "trainaug"])
    assert_pascal_tree(out, pascal_inputs, "trainaug")
    assert "(train list 'trainaug')" in capsys.readouterr().out
    assert Source(PASCAL, "train", root=out).images_with(4, min_pixels=1) == ["2008_000004"]
    with pytest.raises(SystemExit) as info:
        main(["pascal", "--voc", str(pascal_inputs["voc"]), "--sbd", str(pascal_inputs["sbd"]), "--out", str(out),
              "--pascal-train-list", "deeplab"])
    assert info.value.code == 2
    assert "Unknown PASCAL train list 'deeplab'" in capsys.readouterr().err
    assert (out / MARKER).is_file()  # the bad option was rejected before the tree was touched


def test_pascal_splits_rule() -> None:
    voc = {"train": {"a", "b"}, "val": {"v"}}
    sbd = {"train": {"b", "c", "d", "v"}, "val": {"e", "f"}}
    main_train = {"a", "b", "c", "e", "v", "x"}
    assert pascal_splits("pfenet", voc, sbd, main_train) == {"train": ["a", "b", "c"], "val": ["v"]}
    assert pascal_splits("trainaug", voc, sbd, main_train) == {"train": ["a", "b", "c", "d", "e", "f"], "val": ["v"]}


def test_prepare_pascal_from_folders_is_idempotent(pascal_inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert prepare_pascal(pascal_inputs["voc"], pascal_inputs["sbd"], out) == out
    assert_pascal_tree(out, pascal_inputs)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    prepare_pascal(pascal_inputs["voc2012"], pascal_inputs["dataset"], out)  # the inner folders work too
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert leftovers(out) == []


def test_prepare_pascal_into_the_voc_folder(pascal_inputs: dict[str, Path]) -> None:
    out = pascal_inputs["voc2012"]  # the usual case: VOC extracted under $FSSLIB_DATA, prepared in place
    prepare_pascal(pascal_inputs["voc"], pascal_inputs["sbd"], out)
    assert (out / "lists" / "train.txt").read_text().splitlines()[2] == (
        "JPEGImages/2008_000002.jpg SegmentationClassAug/2008_000002.png")
    assert (out / "JPEGImages" / "2007_000099.jpg").is_file()  # VOC's own files are left alone
    image, label = Source(PASCAL, "train", root=out).load("2008_000002")  # SBD-only image, linked in
    assert image.shape == (H, W, 3)
    np.testing.assert_array_equal(label, pascal_label(2, 18, False))


def test_prepare_pascal_bad_inputs(pascal_inputs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="host.robots.ox.ac.uk"):
        prepare_pascal(tmp_path / "no_such_voc", pascal_inputs["sbd"], tmp_path / "out")
    (tmp_path / "fake.tar").write_text("not an archive")
    with pytest.raises(DatasetNotFoundError, match="not a tar archive"):
        prepare_pascal(tmp_path / "fake.tar", pascal_inputs["sbd_tgz"], tmp_path / "out")
    (pascal_inputs["voc2012"] / "ImageSets" / "Main" / "train.txt").unlink()  # only PFENet's list needs it
    with pytest.raises(DatasetNotFoundError, match=r"lacks ImageSets/Main/train\.txt(.|\n)*VOCtrainval"):
        prepare_pascal(pascal_inputs["voc"], pascal_inputs["sbd"], tmp_path / "out")
    prepare_pascal(pascal_inputs["voc"], pascal_inputs["sbd"], tmp_path / "trainaug", train_list="trainaug")
    assert not (tmp_path / "out").exists()


def test_prepare_pascal_checks_every_input_before_writing(
    pascal_inputs: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    def no_unpacking(*args) -> None:
        raise AssertionError("an archive was unpacked before every input was checked")

    monkeypatch.setattr(pascal, "_unpack", no_unpacking)
    out = tmp_path / "out"
    with pytest.raises(DatasetNotFoundError, match=r"SBD input .*no_such_sbd does not exist(.|\n)*benchmark\.tgz"):
        prepare_pascal(pascal_inputs["voc_tar"], tmp_path / "no_such_sbd", out)
    for stem in SBD_CLASSES:
        (pascal_inputs["dataset"] / "cls" / f"{stem}.mat").unlink()
    (pascal_inputs["dataset"] / "cls").rmdir()
    with pytest.raises(DatasetNotFoundError, match=r"lacks cls(.|\n)*benchmark\.tgz"):
        prepare_pascal(pascal_inputs["voc_tar"], pascal_inputs["sbd"], out)
    assert not out.exists() and leftovers(out) == []


def test_prepare_pascal_names_every_missing_file_before_writing(pascal_inputs: dict[str, Path], tmp_path: Path) -> None:
    (pascal_inputs["dataset"] / "cls" / "2008_000002.mat").unlink()  # listed for training, in SBD only
    (pascal_inputs["voc2012"] / "JPEGImages" / "2007_000042.jpg").unlink()  # VOC val, also in SBD's img/
    (pascal_inputs["dataset"] / "img" / "2007_000042.jpg").unlink()
    out = tmp_path / "out"
    with pytest.raises(DatasetNotFoundError, match=r"1 listed images have no mask in .* \(e\.g\. 2008_000002\); "
                                                   r"1 listed images have no JPEG in .* \(e\.g\. 2007_000042\)"):
        prepare_pascal(pascal_inputs["voc"], pascal_inputs["sbd"], out)
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("archives", [True, False])
def test_prepare_pascal_swapped_inputs(pascal_inputs: dict[str, Path], tmp_path: Path, archives: bool) -> None:
    voc, sbd = (pascal_inputs["voc_tar"], pascal_inputs["sbd_tgz"]) if archives else (
        pascal_inputs["voc"], pascal_inputs["sbd"])
    with pytest.raises(DatasetNotFoundError, match=r"swapped") as info:
        prepare_pascal(sbd, voc, tmp_path / "out")
    assert info.value.fix == f"swap them: pass {voc} with --voc and {sbd} with --sbd."
    with pytest.raises(DatasetNotFoundError, match=r"VOC input .* is SBD's release(.|\n)*host\.robots\.ox\.ac\.uk"):
        prepare_pascal(sbd, sbd, tmp_path / "out")
    with pytest.raises(DatasetNotFoundError, match=r"SBD input .* is VOC2012's release(.|\n)*semantic_contours"):
        prepare_pascal(voc, voc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_prepare_leaves_no_tree_that_loads(pascal_inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_pascal(pascal_inputs["voc"], pascal_inputs["sbd"], out)
    save_palette_png(pascal_inputs["voc2012"] / "SegmentationClass" / "2007_000039.png", pascal_label(1, 21, True))
    fresh = tmp_path / "fresh"
    with pytest.raises(InvalidMaskError, match=r"\[21\]"):
        prepare_pascal(pascal_inputs["voc"], pascal_inputs["sbd"], fresh)  # a new root: nothing is left
    assert not fresh.exists() and leftovers(fresh) == []
    with pytest.raises(InvalidMaskError, match=r"\[21\]"):
        prepare_pascal(pascal_inputs["voc"], pascal_inputs["sbd"], out)  # an existing root: it loses its marker
    assert (out / "lists" / "train.txt").is_file() and not (out / MARKER).exists()
    with pytest.raises(DatasetNotFoundError, match=r"was not prepared completely \(no marker(.|\n)*re-run "
                                                   r"`python -m fsslib\.data\.prepare pascal"):
        Source(PASCAL, "train", root=out)


# --------------------------------------------------------------------------- COCO-20i

COCO_IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)]
TRAIN_1, TRAIN_2 = "COCO_train2014_000000000001", "COCO_train2014_000000000002"
VAL_5 = "COCO_val2014_000000000005"


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: column-major run lengths starting with a run of zeros."""
    flat = mask.ravel(order="F")  # (H*W,)
    runs = np.diff([0, *(np.flatnonzero(np.diff(flat)) + 1), flat.size]).tolist()
    return {"size": list(mask.shape), "counts": runs if flat[0] == 0 else [0, *runs]}


def compressed_rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


def expected_coco_masks() -> dict[str, np.ndarray]:
    person = np.zeros((H, W), dtype=np.uint8)
    person[2:28, 4:36] = 1  # person
    person[6:12, 10:20] = 80  # toothbrush (id 90), smaller: drawn last
    person[28:32, :] = 255  # crowd outside any instance
    person[24:28, :4] = person[24:28, 36:] = 255
    stop = np.zeros((24, 36), dtype=np.uint8)
    stop[3:9, 5:13] = 12  # stop sign (id 13)
    stop[10:14, 10:14] = 25  # backpack (id 27)
    stop[12:16, 12:16] = 26  # umbrella (id 28): same area, higher annotation id, drawn last
    table = np.zeros((H, W), dtype=np.uint8)
    table[16:32, :] = 61  # dining table (id 67)
    table[18:22, 2:8] = 74  # book (id 84)
    return {TRAIN_1: person, TRAIN_2: stop, VAL_5: table}


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    """A COCO 2014 root: polygons, RLEs, a crowd region, overlaps, unannotated and crowd-only images."""
    root = tmp_path / "coco_raw"
    categories = [{"id": i, "name": n, "supercategory": "thing"} for i, n in zip(COCO_IDS, COCO_CLASSES)][::-1]
    crowd = np.zeros((H, W), dtype=np.uint8)
    crowd[24:32, :] = 1
    stop = np.zeros((24, 36), dtype=np.uint8)
    stop[3:9, 5:13] = 1
    train_images = [(1, TRAIN_1, H, W), (2, TRAIN_2, 24, 36), (3, "COCO_train2014_000000000003", H, W),
                    (4, "COCO_train2014_000000000004", H, W)]
    train_annotations = [
        coco_annotation(9, 1, 90, rectangle(10, 6, 20, 12)),  # toothbrush, listed before the person under it
        coco_annotation(10, 1, 1, rectangle(4, 2, 36, 28)),
        coco_annotation(11, 1, 1, uncompressed_rle(crowd), crowd=1),
        coco_annotation(20, 2, 13, compressed_rle(stop)),
        coco_annotation(21, 2, 27, rectangle(10, 10, 14, 14)),
        coco_annotation(22, 2, 28, rectangle(12, 12, 16, 16)),
        coco_annotation(40, 4, 1, uncompressed_rle(crowd), crowd=1),  # image 4 has only a crowd
    ]
    val_images = [(5, VAL_5, H, W)]
    val_annotations = [
        coco_annotation(50, 5, 84, rectangle(2, 18, 8, 22)),  # book on the table
        coco_annotation(51, 5, 67, rectangle(0, 16, 40, 32)),
    ]
    for split, images, split_annotations in (("train", train_images, train_annotations), ("val", val_images, val_annotations)):
        for image_id, stem, height, width in images:
            save_jpeg(root / f"{split}2014" / f"{stem}.jpg", height, width, seed=image_id)
        payload = {"images": [{"id": i, "file_name": f"{s}.jpg", "height": h, "width": w} for i, s, h, w in images],
                   "annotations": split_annotations, "categories": categories}
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(payload))
    return root


def assert_coco_tree(out: Path) -> None:
    assert (out / "lists" / "train.txt").read_text() == (
        f"train2014/{TRAIN_1}.jpg masks/train2014/{TRAIN_1}.png\ntrain2014/{TRAIN_2}.jpg masks/train2014/{TRAIN_2}.png\n"
    )
    assert (out / "lists" / "val.txt").read_text() == f"val2014/{VAL_5}.jpg masks/val2014/{VAL_5}.png\n"
    assert read_class_index(out, "train", "") == {TRAIN_1: {1: 772, 80: 60}, TRAIN_2: {12: 48, 25: 12, 26: 16}}
    assert read_class_index(out, "val", "") == {VAL_5: {61: 616, 74: 24}}
    for stem, expected in expected_coco_masks().items():
        split = stem.split("_")[1]
        with Image.open(out / "masks" / split / f"{stem}.png") as handle:
            np.testing.assert_array_equal(np.asarray(handle), expected)
    assert sorted(p.name for p in (out / "masks" / "train2014").iterdir()) == [f"{TRAIN_1}.png", f"{TRAIN_2}.png"]
    assert json.loads((out / MARKER).read_text()) == {"benchmark": "coco", "images": {"train": 2, "val": 1}}


def test_prepare_coco_to_separate_out(coco_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "data" / "coco"
    assert prepare_coco(coco_root, out) == out
    assert_coco_tree(out)
    assert (out / "train2014").is_symlink() and (out / "train2014").resolve() == (coco_root / "train2014").resolve()
    benchmark = get_benchmark("coco")
    assert [benchmark.class_name(c) for c in (1, 12, 25, 26, 61, 74, 80)] == [
        "person", "stop sign", "backpack", "umbrella", "dining table", "book", "toothbrush"]
    source = Source(benchmark, "train", root=out)
    image, label = source.load(TRAIN_2)
    assert image.shape == (24, 36, 3)
    np.testing.assert_array_equal(label, expected_coco_masks()[TRAIN_2])
    assert source.images_with(80, min_pixels=1) == [TRAIN_1]
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    main(["coco", "--root", str(coco_root), "--out", str(out)])  # idempotent
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_prepare_coco_in_place(coco_root: Path) -> None:
    prepare_coco(coco_root, coco_root)
    assert_coco_tree(coco_root)
    assert not (coco_root / "train2014").is_symlink()
    image, label = Source(get_benchmark("coco", "contiguous"), "val", root=coco_root).load(VAL_5)
    assert image.shape == (H, W, 3) and label.max() == 74


def test_prepare_coco_bad_inputs(coco_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        prepare_coco(tmp_path / "no_such_coco", tmp_path / "out")
    payload = json.loads((coco_root / "annotations" / "instances_train2014.json").read_text())
    payload["categories"] = payload["categories"][1:]
    (coco_root / "annotations" / "instances_train2014.json").write_text(json.dumps(payload))
    with pytest.raises(DatasetNotFoundError, match="not the 80 COCO classes"):
        prepare_coco(coco_root, tmp_path / "out")
    (coco_root / "annotations" / "instances_val2014.json").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"instances_val2014\.json(.|\n)*cocodataset\.org"):
        prepare_coco(coco_root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def no_masks(monkeypatch) -> None:
    """Fail as soon as prepare_coco starts painting masks."""

    def fail(*args) -> None:
        raise AssertionError("masks were painted before every input was checked")

    monkeypatch.setattr(coco, "semantic_mask", fail)


def test_prepare_coco_checks_every_input_before_writing(coco_root: Path, tmp_path: Path, no_masks: None) -> None:
    (coco_root / "val2014" / f"{VAL_5}.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=rf"1 images of instances_val2014\.json are not in .*val2014, "
                                                   rf"e\.g\. {VAL_5}\.jpg(.|\n)*unzip the complete val2014\.zip"):
        prepare_coco(coco_root, tmp_path / "out")
    (coco_root / "val2014").rmdir()
    (coco_root / "annotations" / "instances_train2014.json").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"lacks val2014, annotations/instances_train2014\.json\."):
        prepare_coco(coco_root, tmp_path / "out")
    (coco_root / "val2017").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"lacks val2014, annotations/instances_train2014\.json \(it has "
                                                   r"val2017, but COCO-20i needs the 2014 split\)"):
        prepare_coco(coco_root, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out.partial-*")) == []


def test_prepare_coco_names_a_2017_download(tmp_path: Path, no_masks: None) -> None:
    root = tmp_path / "coco2017"
    for folder in ("train2017", "val2017", "annotations"):
        (root / folder).mkdir(parents=True)
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}2017.json").write_text("{}")
    with pytest.raises(DatasetNotFoundError) as info:
        prepare_coco(root, tmp_path / "out")
    assert info.value.problem == (
        f"COCO root {root} holds the COCO 2017 release (train2017, val2017, annotations/instances_train2017.json, "
        "annotations/instances_val2017.json) and none of the 2014 files.")
    assert "uses the 2014 train/val split" in info.value.fix and "val2014.zip" in info.value.fix


def test_failed_coco_prepare_leaves_no_tree_that_loads(coco_root: Path, tmp_path: Path, monkeypatch) -> None:
    prepare_coco(coco_root, coco_root)
    painted = []

    def fail_on_val(coco_index, image_id: int, class_of: dict[int, int]):
        if coco_index.imgs[image_id]["file_name"].startswith("COCO_val"):
            raise KeyboardInterrupt  # e.g. Ctrl-C halfway
        painted.append(image_id)
        return semantic_mask(coco_index, image_id, class_of)

    monkeypatch.setattr(coco, "semantic_mask", fail_on_val)
    for out in (tmp_path / "fresh", coco_root):  # a new root, then the in-place one
        with pytest.raises(KeyboardInterrupt):
            prepare_coco(coco_root, out)
    assert painted and not (tmp_path / "fresh").exists() and list(tmp_path.glob(".fresh.partial-*")) == []
    with pytest.raises(DatasetNotFoundError, match=r"not prepared completely(.|\n)*prepare coco --root PATH/TO/coco"):
        Source(get_benchmark("coco"), "train", root=coco_root)

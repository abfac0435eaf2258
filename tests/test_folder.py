"""A dataset folder as a benchmark (``--benchmark folder:PATH``): built from rendered toy scenes, trained and
evaluated through the command line, and checked completely before anything runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TOY_TO_FOLDER = {1: 1, 2: 2, 6: 3, 7: 4}  # toy ids -> the folder's ids
CLASSES = "1 solid circle\n2 striped square\n3 striped circle\n4 dotted square\n"


def make_folder(toy_root: Path, out: Path, count: int = 48) -> Path:
    """``count`` toy test scenes holding one of four toy classes, as images/, masks/ and classes.txt."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    presence = json.loads((toy_root / "lists" / "test_classes.json").read_text())
    stems = [s for s, counts in sorted(presence.items()) if any(int(c) in TOY_TO_FOLDER for c in counts)][:count]
    for stem in stems:
        label = np.asarray(Image.open(toy_root / "SegmentationClassAug" / f"{stem}.png"))
        mask = np.where(label == 255, 255, 0).astype(np.uint8)
        for toy_id, folder_id in TOY_TO_FOLDER.items():
            mask[label == toy_id] = folder_id
        Image.fromarray(mask).save(out / "masks" / f"{stem}.png")
        shutil.copy(toy_root / "JPEGImages" / f"{stem}.jpg", out / "images" / f"{stem}.jpg")
    (out / "classes.txt").write_text(CLASSES)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory, toy_root) -> Path:
    return make_folder(toy_root, tmp_path_factory.mktemp("mydata") / "shapes")


def test_train_and_evaluate_a_folder_through_the_command_line(folder, tmp_path, capsys):
    from fsslib import evaluate, train

    benchmark = ["--benchmark", f"folder:{folder}", "--novel-classes", "1,2", "--progress", "--no-progress"]
    train.main(["--method", "prototype", *benchmark, "--smoke", "--out", str(tmp_path / "run")])
    assert (tmp_path / "run" / "best.pt").is_file()
    evaluate.main(["--method", "prototype", *benchmark, "--ckpt", str(tmp_path / "run" / "best.pt"), "--episodes", "40",
                   "--out", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["benchmark"] == "folder" and set(metrics["per_class_iou"]) == {"solid circle", "striped square"}
    assert metrics["episodes"] == 40 and 0 < metrics["miou"] <= 100


def test_folds_json_defines_the_folds(folder, tmp_path):
    from fsslib.config import make_config
    from fsslib.data.benchmarks import benchmark_of
    from fsslib.engine import open_source

    copy = shutil.copytree(folder, tmp_path / "folded")
    (copy / "folds.json").write_text(json.dumps({"folds": [[1, 2], [3, 4]]}))
    cfg = make_config(benchmark=f"folder:{copy}", fold=1)
    benchmark = benchmark_of(cfg)
    assert benchmark.n_folds == 2 and benchmark.fold_classes(1) == [3, 4] and benchmark.base_classes(1) == [1, 2]
    source = open_source(cfg, "test")
    assert source.images_with(3) and all(3 in source.presence[n] for n in source.images_with(3))


def test_every_problem_of_a_folder_is_reported_in_one_message(folder, tmp_path):
    from fsslib.config import make_config
    from fsslib.data.benchmarks import benchmark_of
    from fsslib.errors import DatasetNotFoundError

    broken = shutil.copytree(folder, tmp_path / "broken")
    stems = sorted(p.stem for p in (broken / "images").glob("*.jpg"))
    (broken / "images" / f"{stems[0]}.jpg").unlink()  # a mask without its image
    (broken / "masks" / f"{stems[1]}.png").unlink()  # an image without its mask
    Image.fromarray(np.full((64, 64), 9, np.uint8)).save(broken / "masks" / f"{stems[2]}.png")  # an id not in classes.txt
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(broken / "masks" / f"{stems[3]}.png")  # another size
    with pytest.raises(DatasetNotFoundError) as error:
        benchmark_of(make_config(benchmark=f"folder:{broken}", novel_classes=[1, 2]))
    message = str(error.value)
    assert "4 problem(s)" in message
    for expected in (f"masks/{stems[0]}.png has no image", f"images/{stems[1]}.jpg has no mask",
                     f"masks/{stems[2]}.png holds ids [9]", f"masks/{stems[3]}.png is 64 x 32 but"):
        assert expected in message


def test_a_folder_without_folds_asks_for_novel_classes(folder):
    from fsslib.config import make_config
    from fsslib.data.benchmarks import benchmark_of
    from fsslib.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="--novel-classes"):
        benchmark_of(make_config(benchmark=f"folder:{folder}"))
    with pytest.raises(DatasetNotFoundError, match=r"\[7\] are not in"):
        benchmark_of(make_config(benchmark=f"folder:{folder}", novel_classes=[1, 7]))


def test_a_folder_reads_its_pictures_as_predict_does_and_refuses_ambiguity(folder, tmp_path):
    from fsslib.config import make_config
    from fsslib.data.benchmarks import benchmark_of
    from fsslib.engine import open_source
    from fsslib.errors import DatasetNotFoundError
    from fsslib.predict import read_image

    copy = shutil.copytree(folder, tmp_path / "sixteen")
    stem = sorted(p.stem for p in (copy / "images").glob("*.jpg"))[0]
    grey = np.asarray(Image.open(copy / "images" / f"{stem}.jpg").convert("L")).astype(np.uint16) * 257
    (copy / "images" / f"{stem}.jpg").unlink()
    Image.fromarray(grey).save(copy / "images" / f"{stem}.png")  # a 16-bit picture
    cfg = make_config(benchmark=f"folder:{copy}", novel_classes=[1, 2])
    image, _ = open_source(cfg, "test").load(stem)
    assert np.array_equal(image, (read_image(copy / "images" / f"{stem}.png") * 255).round().byte().permute(1, 2, 0).numpy())
    assert abs(float(image.mean()) - float(grey.mean()) / 257) < 1  # not clipped to white
    with pytest.raises(DatasetNotFoundError, match="does not apply to a dataset folder"):
        open_source(make_config(benchmark=f"folder:{copy}", novel_classes=[1, 2], data_root=str(tmp_path)), "test")
    (copy / "folds.json").write_text(json.dumps({"folds": [[1, 2]]}))
    with pytest.raises(DatasetNotFoundError, match="and novel classes were given"):
        benchmark_of(make_config(benchmark=f"folder:{copy}", novel_classes=[1, 2]))
    (copy / "classes.txt").write_text(CLASSES.replace("4 dotted square", "4 solid circle"))
    with pytest.raises(DatasetNotFoundError, match="repeats the name 'solid circle'"):
        benchmark_of(make_config(benchmark=f"folder:{copy}"))


def test_a_folder_evaluates_with_every_class_novel_and_only_training_refuses_it(folder, tmp_path, capsys):
    """Evaluating a model on a folder of classes it never saw (every class novel) runs; training needs base classes."""
    from fsslib import evaluate, train

    benchmark = ["--benchmark", f"folder:{folder}", "--novel-classes", "1,2,3,4", "--no-progress"]
    evaluate.main(["--method", "all-foreground", *benchmark, "--episodes", "8", "--out", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["episodes"] == 8 and set(metrics["per_class_iou"]) <= {line[2:] for line in CLASSES.splitlines()}
    with pytest.raises(SystemExit) as exit_:
        train.main(["--method", "prototype", *benchmark, "--smoke", "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "leaving none to train on" in error
    assert f"`python -m fsslib.evaluate --method maskclip --benchmark folder:{folder} --novel-classes 1,2,3,4`" in error
    assert not (tmp_path / "run").exists()


def test_a_folder_reads_phone_photos_as_shown_and_refuses_lossy_masks(folder, tmp_path):
    """An image stored turned with EXIF orientation 6 pairs with a mask of its size as shown and is read upright;
    a mask saved as JPEG, or a PNG holding a JPEG's noise, is named with how to save it."""
    from fsslib.config import make_config
    from fsslib.data.benchmarks import benchmark_of
    from fsslib.engine import open_source
    from fsslib.errors import DatasetNotFoundError

    copy = shutil.copytree(folder, tmp_path / "phone")
    stems = sorted(p.stem for p in (copy / "images").glob("*.jpg"))
    upright = np.asarray(Image.open(copy / "images" / f"{stems[0]}.jpg"))[:, 8:56]  # 64 x 48 as shown
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(copy / "images" / f"{stems[0]}.jpg", exif=exif,
                                                                       quality=95)
    label = np.asarray(Image.open(copy / "masks" / f"{stems[0]}.png"))[:, 8:56]
    Image.fromarray(label).save(copy / "masks" / f"{stems[0]}.png")
    Image.open(copy / "images" / f"{stems[3]}.jpg").save(copy / "images" / f"{stems[3]}.webp", lossless=True)
    (copy / "images" / f"{stems[3]}.jpg").unlink()  # a WebP picture: any format PIL reads
    source = open_source(make_config(benchmark=f"folder:{copy}", novel_classes=[1, 2]), "test")
    image, read_label = source.load(stems[0])
    assert image.shape == (64, 48, 3) and np.abs(image.astype(int) - upright).mean() < 8 and np.array_equal(read_label, label)
    assert source.load(stems[3])[0].shape == (64, 64, 3)
    (copy / "masks" / f"{stems[1]}.png").rename(copy / "masks" / f"{stems[1]}.jpg")
    Image.open(copy / "masks" / f"{stems[1]}.jpg").convert("L").save(copy / "masks" / f"{stems[1]}.jpg")
    noisy = np.zeros((64, 64), np.uint8)
    noisy[13:45, 19:51] = 255
    Image.fromarray(noisy).save(tmp_path / "box.jpg", quality=75)
    Image.fromarray(np.asarray(Image.open(tmp_path / "box.jpg"))).save(copy / "masks" / f"{stems[2]}.png")
    with pytest.raises(DatasetNotFoundError) as error:
        benchmark_of(make_config(benchmark=f"folder:{copy}", novel_classes=[1, 2]))
    message = str(error.value)
    assert "2 problem(s)" in message and f"masks/{stems[1]}.jpg is not a PNG: save the mask as a PNG" in message
    assert f"masks/{stems[2]}.png holds" in message and "distinct values between 0 and 255" in message


def test_prepared_benchmarks_read_pictures_as_stored_and_folders_as_shown(tmp_path):
    """A prepared benchmark's annotations are drawn on the stored pixel grid (HSNet reads them with PIL, without
    EXIF), so its pictures are read as stored; a dataset folder's as a viewer shows them."""
    import numpy as np
    from PIL import Image

    from fsslib.data.episodes import _read

    picture = np.zeros((4, 6, 3), dtype=np.uint8)
    picture[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees, as phones write it
    Image.fromarray(picture).save(tmp_path / "p.jpg", exif=exif, quality=100)
    assert _read(tmp_path / "p.jpg", "RGB", shown=False).shape == (4, 6, 3)
    assert _read(tmp_path / "p.jpg", "RGB", shown=True).shape == (6, 4, 3)

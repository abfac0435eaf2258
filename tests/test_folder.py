"""A dataset folder as a benchmark (``--benchmark folder:PATH``): built from rendered toy scenes, trained and
evaluated through the command line, and checked completely before anything runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsslib.config import make_config

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


def predict_a_picture(folder: Path, out: Path, *argv: str) -> str:
    """``python -m fsslib.predict ARGV`` on one of ``folder``'s pictures, supported by another with its class-1 mask
    (written under ``out``), into ``out/predicted``; returns the query's stem after checking the exit status."""
    from fsslib import predict

    stems = [p.stem for p in sorted((folder / "masks").glob("*.png")) if (np.asarray(Image.open(p)) == 1).any()]
    Image.fromarray((np.asarray(Image.open(folder / "masks" / f"{stems[0]}.png")) == 1).astype(np.uint8)).save(
        out / "support_mask.png")
    pictures = ["--query", str(folder / "images" / f"{stems[1]}.jpg"),
                "--support", str(folder / "images" / f"{stems[0]}.jpg"), "--support-mask", str(out / "support_mask.png")]
    assert predict.main([*argv, *pictures, "--out", str(out / "predicted")]) == 0
    return stems[1]


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
    # the folder's model segments a picture of yours: predict with the benchmark it was trained on
    query = predict_a_picture(folder, tmp_path, "--method", "prototype", "--ckpt", str(tmp_path / "run" / "best.pt"),
                              "--class-name", "solid circle", *benchmark[:4])
    assert (tmp_path / "predicted" / f"{query}_mask.png").is_file()
    # its base classes 3 and 4 scored as novel: refused before any episode, naming the fold it was trained for (the
    # same folder, its path written another way)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--method", "prototype", "--benchmark", f"folder:{folder.parent}/./{folder.name}",
                       "--novel-classes", "3,4",
                       "--ckpt", str(tmp_path / "run" / "best.pt"), "--episodes", "8", "--out", str(tmp_path / "seen")])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "['striped circle', 'dotted square']" in error and "has seen" in error
    assert "--fold 0 --novel-classes 1,2" in error and not (tmp_path / "seen").exists()


def test_a_zoo_model_on_a_folder_whose_novel_names_it_trained_on_is_warned_about(folder, tmp_path):
    """Fold 0's zoo models trained on toy classes 6 to 20; the folder's 'striped circle' (toy 6) scored as novel
    there may be the same class: a warning, since on another benchmark a name may mean another class."""
    from fsslib import evaluate

    with pytest.warns(UserWarning, match=r"trained on classes named \['striped circle'\]"):
        evaluate.run(make_config(method="pfenet", benchmark=f"folder:{folder}", novel_classes=[1, 3], ckpt="zoo",
                                 episodes=4, progress=False, out=str(tmp_path / "eval")))


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
    assert "4 problem(s)" in message and "correct each file listed above" in message
    for expected in (f"masks/{stems[0]}.png has no image", f"images/{stems[1]}.jpg has no mask",
                     f"masks/{stems[2]}.png holds ids [9]", f"masks/{stems[3]}.png is 64 x 32 but"):
        assert expected in message


def test_a_folder_without_folds_asks_for_novel_classes(folder):
    from fsslib.config import make_config
    from fsslib.data.benchmarks import benchmark_of
    from fsslib.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="--novel-classes") as error:
        benchmark_of(make_config(benchmark=f"folder:{folder}"))
    fix = str(error.value)
    assert "--novel-classes 3,4" in fix and '{"folds": [[3, 4], [1, 2]]}' in fix and "4 'dotted square'" in fix
    assert benchmark_of(make_config(benchmark=f"folder:{folder}", novel_classes=[3, 4])).fold_classes(0) == [3, 4]
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
    assert "2 problem(s)" in message and f"masks/{stems[1]}.jpg is not a PNG: save each mask as a PNG" in message
    assert f"masks/{stems[2]}.png holds" in message and "distinct values between 0 and 255" in message
    assert "255 = pixels to ignore" in message  # the folder's convention, not predict's black-and-white masks


def test_a_black_and_white_mask_in_a_folder_is_refused_not_read_as_ignore(folder, tmp_path):
    """predict reads a 0 / 255 mask as background / object; in a folder 255 means ignore, so such a mask would
    silently label no class: it is refused, naming the class ids to write instead."""
    from fsslib.config import make_config
    from fsslib.data.benchmarks import benchmark_of
    from fsslib.errors import DatasetNotFoundError

    copy = shutil.copytree(folder, tmp_path / "black_and_white")
    stem = sorted(p.stem for p in (copy / "masks").glob("*.png"))[0]
    label = np.asarray(Image.open(copy / "masks" / f"{stem}.png"))
    Image.fromarray(np.where(label > 0, 255, 0).astype(np.uint8)).save(copy / "masks" / f"{stem}.png")
    with pytest.raises(DatasetNotFoundError) as error:
        benchmark_of(make_config(benchmark=f"folder:{copy}", novel_classes=[1, 2]))
    assert f"masks/{stem}.png holds only 0 and 255, and 255 means ignore" in str(error.value)
    assert "class id from classes.txt (1..4)" in str(error.value)


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


def test_a_folder_picture_with_nan_pixels_is_refused_naming_the_file(tmp_path):
    from fsslib.data.episodes import _read
    from fsslib.errors import CorruptImageError

    values = np.full((4, 6), 0.5, dtype=np.float32)
    values[1, 2] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(CorruptImageError, match="nan.tif holds 1 NaN or infinite value"):
        _read(tmp_path / "nan.tif", "RGB", shown=True)
    values[1, 2] = 0.25
    Image.fromarray(values, mode="F").save(tmp_path / "fine.tif")
    assert _read(tmp_path / "fine.tif", "RGB", shown=True).shape == (4, 6, 3)


def test_novel_classes_by_name_and_classes_a_folder_cannot_use(folder, tmp_path, capsys):
    """--novel-classes takes names as classes.txt spells them (any case and spacing) or ids; an unknown one lists
    the classes; names that differ in case and spacing only are one class; a class with too few images for a
    support says to add images (not to lower the shots at 1 shot)."""
    from fsslib import evaluate
    from fsslib.config import make_config
    from fsslib.data.benchmarks import benchmark_of
    from fsslib.errors import DatasetNotFoundError

    assert benchmark_of(make_config(benchmark=f"folder:{folder}", novel_classes=["Solid  Circle", 4])).folds == ((1, 4),)
    benchmark = ["--benchmark", f"folder:{folder}", "--episodes", "4", "--no-progress", "--out", str(tmp_path / "eval")]
    evaluate.main(["--method", "all-foreground", *benchmark, "--novel-classes", "striped square, 3"])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["config"]["novel_classes"] == ["striped square", 3]
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--method", "all-foreground", *benchmark, "--novel-classes", "giraffe"])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "Novel class(es) ['giraffe'] are not in" in error
    assert "pass ids or names of its classes (1 'solid circle', 2 'striped square'" in error and "invalid" not in error
    copy = shutil.copytree(folder, tmp_path / "rare")
    (copy / "classes.txt").write_text(CLASSES + "5 Solid  Circle \n")
    with pytest.raises(DatasetNotFoundError, match="repeats the name 'Solid  Circle' \\(names compare without case"):
        benchmark_of(make_config(benchmark=f"folder:{copy}", novel_classes=[1]))
    (copy / "classes.txt").write_text(CLASSES)
    showing = [p for p in sorted((copy / "masks").glob("*.png")) if (np.asarray(Image.open(p)) == 3).any()]
    for path in showing[1:]:  # class 3 is left in one image: a query, but no support
        Image.fromarray(np.where(np.asarray(Image.open(path)) == 3, 0, np.asarray(Image.open(path)))).save(path)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--method", "all-foreground", *benchmark[:1], f"folder:{copy}", *benchmark[2:], "--novel-classes", "3"])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "['striped circle'] have 1 or fewer images with at least" in error
    assert "each needs 2 (a query and 1 support(s))" in error and "lower the number of shots" not in error


def test_bam_s_family_without_base_classes_says_so(folder, tmp_path, capsys):
    """With every class novel, no base learner can be trained: evaluate and pretrain say so and what to do."""
    from fsslib import evaluate
    from fsslib.pretrain.__main__ import main as pretrain

    every = ["--benchmark", f"folder:{folder}", "--novel-classes", "1,2,3,4"]
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--method", "piclip-hdmnet", "--ckpt", "zoo", *every, "--out", str(tmp_path / "eval")])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "Every class of folder:" in error and "keep some classes out of --novel-classes" in error
    with pytest.raises(SystemExit) as exit_:
        pretrain(["base-learner", *every, "--out", str(tmp_path / "learner.pt")])
    assert exit_.value.code == 2 and "no base class is left" in capsys.readouterr().err
    assert not (tmp_path / "learner.pt").exists()


@pytest.mark.slow
def test_bam_on_a_folder_trains_its_base_learner_from_the_command_evaluate_gives(folder, tmp_path, capsys):
    """evaluate --method bam --ckpt zoo on a folder names the exact command that trains the folder's base learner;
    run, it writes the folder's base-learner-fold0.pt; evaluate then says to train BAM on the folder (the zoo's was
    trained on the toy world) with the command it gives; trained so, BAM evaluates on the folder."""
    import shlex

    from fsslib import evaluate, train
    from fsslib.pretrain.__main__ import main as pretrain

    copy = shutil.copytree(folder, tmp_path / "shapes")
    benchmark = ["--benchmark", f"folder:{copy}", "--novel-classes", "solid circle,2"]
    evaluation = ["--method", "bam", *benchmark, "--episodes", "8", "--no-progress", "--out", str(tmp_path / "eval")]
    with pytest.raises(SystemExit):
        evaluate.main([*evaluation, "--ckpt", "zoo"])
    error = capsys.readouterr().err
    command = f"python -m fsslib.pretrain base-learner --benchmark folder:{copy} --novel-classes 1,2"
    assert f"train it with `{command}`" in error and f"it writes {copy / 'base-learner-fold0.pt'}" in error
    pretrain([*shlex.split(command)[3:], "--epochs", "1", "--batch-size", "8", "--train-images", "16", "--eval-images",
              "8", "--hidden", "8", "--no-progress"])
    assert (copy / "base-learner-fold0.pt").is_file()
    with pytest.raises(SystemExit):
        evaluate.main([*evaluation, "--ckpt", "zoo"])
    error = capsys.readouterr().err
    command = f"python -m fsslib.train --method bam --benchmark folder:{copy} --novel-classes 1,2 --out RUN"
    assert "the zoo's models were trained on the toy world" in error and command in error
    train.main([*shlex.split(command)[3:-1], str(tmp_path / "run"), "--smoke", "--no-progress"])
    evaluate.main([*evaluation, "--ckpt", str(tmp_path / "run" / "best.pt")])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["method"] == "bam" and metrics["episodes"] == 8 and set(metrics["per_class_iou"]) <= {"solid circle",
                                                                                                         "striped square"}
    trained = str(tmp_path / "run" / "best.pt")
    query = predict_a_picture(copy, tmp_path, "--method", "bam", *benchmark, "--ckpt", trained)
    assert (tmp_path / "predicted" / f"{query}_mask.png").is_file()  # with the folder's base learner


def test_a_folder_without_classes_txt_says_that_once(folder, tmp_path):
    """Without classes.txt every mask's ids are unknown: the one missing file is the problem, not each mask."""
    from fsslib.data.folder import folder_index
    from fsslib.errors import DatasetNotFoundError

    bare = shutil.copytree(folder, tmp_path / "bare")
    (bare / "classes.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"has 1 problem\(s\):\n    no classes.txt"):
        folder_index(bare)

"""The paper tier rehearsed as a user types it: ``prepare`` from VOC / SBD archives and a COCO 2014 folder,
then ``train --preset paper`` and ``evaluate`` for every trained method, through the command line. ``prepare``
and the prototype's ``train`` and ``evaluate`` run as the processes a user starts (``python -m ...``); the other
methods call the same ``main(argv)`` in the test's process, which spares each of them two interpreters that
would import torch and open_clip again (the argument parsing, files and messages are the same).

The archives are fabricated in the official formats at real image sizes (500 x 375 and 375 x 500, 640 x 480
for COCO; class-index masks with 255 borders). The weights are random (``--backbone-weights random``, a CLIP
without ``clip_pretrained``, random CLIP-DINOiser heads in the official release's format) and the input size
is reduced to spare CPU time; everything else is the paper preset's code path: PASCAL-5i / COCO-20i fold 0,
the methods' paper settings, evaluation at the original label sizes and, for CLIP-DINOiser, queries resized
by their short side and read by sliding windows.

``FSSLIB_REHEARSAL=paper`` runs the same at the papers' own input sizes (473 / 400 / 448), sliding windows
and prompt templates, on a GPU when there is one (``device="auto"``, bf16 autocast):

    FSSLIB_REHEARSAL=paper pytest tests/test_paper_tier_cli.py -m slow
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from fabricate import coco_annotation, rectangle, save_jpeg, save_palette_png
from fsslib.data.benchmarks import COCO_CLASSES

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

PAPER_SIZES = os.environ.get("FSSLIB_REHEARSAL") == "paper"  # the papers' sizes, windows and prompts (a GPU)
IMAGE_SIZE = 97  # the paper sizes are 473 / 400 / 448: reduced for the CPU, the code path unchanged
LANDSCAPE, PORTRAIT = (375, 500), (500, 375)  # (H, W) of PASCAL's most common image sizes
# PASCAL-5i fold 0 tests classes 1-5 and trains on 6-20: every class in at least two images
VOC_VAL = {"2007_000101": (1, 2), "2007_000102": (2, 3), "2007_000103": (3, 4), "2007_000104": (4, 5), "2007_000105": (5, 1)}
VOC_TRAIN = {"2007_000201": (6, 7), "2007_000202": (7, 8), "2007_000203": (8, 6)}
SBD_TRAIN = {"2008_000301": (9, 6), "2008_000302": (9, 7)}  # SBD train and VOC's detection train: in PFENet's list


def two_objects(height: int, width: int, first: int, second: int, borders: bool) -> np.ndarray:
    """(H, W) uint8 label: two blocks of a quarter of each side or more, with VOC's 255 borders when asked."""
    label = np.zeros((height, width), dtype=np.uint8)
    label[height // 8: height // 2, width // 8: width // 2] = first
    label[height // 2 + 10: height - 10, width // 2: width - 20] = second
    if borders:
        label[height // 2, width // 8: width // 2] = 255
        label[height // 2 + 9, width // 2: width - 20] = 255
    return label


def fabricate_pascal(root: Path) -> tuple[Path, Path]:
    """``VOCtrainval_11-May-2012.tar`` and ``benchmark.tgz`` holding the images above."""
    voc2012 = root / "voc" / "VOCdevkit" / "VOC2012"
    for index, (stem, classes) in enumerate({**VOC_VAL, **VOC_TRAIN}.items()):
        height, width = LANDSCAPE if index % 2 == 0 else PORTRAIT
        save_jpeg(voc2012 / "JPEGImages" / f"{stem}.jpg", height, width, seed=index)
        save_palette_png(voc2012 / "SegmentationClass" / f"{stem}.png", two_objects(height, width, *classes, borders=True))
    lists = {"Segmentation/train.txt": VOC_TRAIN, "Segmentation/val.txt": VOC_VAL, "Main/train.txt": {**VOC_TRAIN, **SBD_TRAIN}}
    for name, stems in lists.items():
        (voc2012 / "ImageSets" / name).parent.mkdir(parents=True, exist_ok=True)
        (voc2012 / "ImageSets" / name).write_text("".join(f"{stem}\n" for stem in stems))
    dataset = root / "sbd" / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    for index, (stem, classes) in enumerate(SBD_TRAIN.items()):
        label = two_objects(*LANDSCAPE, *classes, borders=False)
        scipy.io.savemat(dataset / "cls" / f"{stem}.mat",
                         {"GTcls": {"Segmentation": label, "CategoriesPresent": np.unique(label[label > 0])}})
        save_jpeg(dataset / "img" / f"{stem}.jpg", *LANDSCAPE, seed=50 + index)
    (dataset / "train.txt").write_text("".join(f"{stem}\n" for stem in SBD_TRAIN))
    (dataset / "val.txt").write_text("")
    voc_tar, sbd_tgz = root / "VOCtrainval_11-May-2012.tar", root / "benchmark.tgz"
    with tarfile.open(voc_tar, "w") as tar:
        tar.add(root / "voc" / "VOCdevkit", arcname="VOCdevkit")
    with tarfile.open(sbd_tgz, "w:gz") as tar:
        tar.add(root / "sbd" / "benchmark_RELEASE", arcname="benchmark_RELEASE")
    return voc_tar, sbd_tgz


COCO_IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)]


def fabricate_coco(root: Path) -> Path:
    """A COCO 2014 folder: COCO-20i fold 0's 20 test classes (interleaved: 1, 5, 9, ...) in two val images each,
    base classes in the train images, 640 x 480 with rectangles as polygons."""
    test_ids = [COCO_IDS[index] for index in range(0, 80, 4)]
    base_ids = [COCO_IDS[index] for index in (1, 2, 3)]
    val = [(test_ids[i], test_ids[(i + 1) % 20]) for i in range(20)]
    train = [(base_ids[i], base_ids[(i + 1) % 3]) for i in range(3)]
    categories = [{"id": i, "name": n, "supercategory": "thing"} for i, n in zip(COCO_IDS, COCO_CLASSES)]
    for split, pairs in (("train", train), ("val", val)):
        images, annotations = [], []
        for index, (first, second) in enumerate(pairs, start=1):
            stem = f"COCO_{split}2014_{index:012d}"
            save_jpeg(root / f"{split}2014" / f"{stem}.jpg", 480, 640, seed=index)
            images.append({"id": index, "file_name": f"{stem}.jpg", "height": 480, "width": 640})
            annotations += [coco_annotation(2 * index, index, first, rectangle(40, 40, 300, 220)),
                            coco_annotation(2 * index + 1, index, second, rectangle(320, 250, 620, 460))]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        payload = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(payload))
    return root


def command(environment: dict[str, str], module: str, *arguments: str) -> str:
    """Run ``python -m module arguments`` as a user types it; its output, or the test fails with it."""
    done = subprocess.run([sys.executable, "-m", module, *arguments], env=environment, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, f"python -m {module} {' '.join(arguments)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The user's folder: downloads, data, weights."""
    return tmp_path_factory.mktemp("paper_user")


def user_environment(home: Path) -> dict[str, str]:
    """The environment of a user whose data and weights folders are under ``home``; one thread per process."""
    return {**os.environ, "FSSLIB_DATA": str(home / "data"), "FSSLIB_WEIGHTS": str(home / "weights"),
            "TORCH_HOME": str(home / "torch"), "HF_HUB_CACHE": str(home / "hf"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def prepared(home) -> dict[str, str]:
    """The environment after PASCAL-5i and COCO-20i were prepared through ``python -m fsslib.data.prepare``
    (no weights fetched); random CLIP-DINOiser heads at ``home / "last.pt"``."""
    user = user_environment(home)
    if PAPER_SIZES:
        user.pop("OMP_NUM_THREADS")
    voc_tar, sbd_tgz = fabricate_pascal(home / "downloads")
    printed = command(user, "fsslib.data.prepare", "pascal", "--voc", str(voc_tar), "--sbd", str(sbd_tgz))
    assert "prepared pascal" in printed
    coco_root = fabricate_coco(home / "downloads" / "coco")
    assert "prepared coco" in command(user, "fsslib.data.prepare", "coco", "--root", str(coco_root))
    heads = {"model_state_dict": {"obj_proj.weight": torch.randn(256, 768, 3, 3) * 0.01, "obj_proj.bias": torch.zeros(256),
                                  "bkg_decoder.weight": torch.randn(1, 768, 1, 1) * 0.01, "bkg_decoder.bias": torch.zeros(1)}}
    torch.save(heads, home / "last.pt")
    return user


def assert_fold_zero_scores(metrics: dict, benchmark_name: str) -> None:
    """The scores are of fold 0's test classes only, and mIoU is their mean (the evaluation read the fold right)."""
    from fsslib.data.benchmarks import get_benchmark

    benchmark = get_benchmark(benchmark_name)
    test_names = {benchmark.class_name(c) for c in benchmark.fold_classes(0)}
    per_class = metrics["per_class_iou"]
    assert per_class and set(per_class) <= test_names, (sorted(per_class), sorted(test_names))
    assert metrics["miou"] == pytest.approx(sum(per_class.values()) / len(per_class))


RANDOM_CLIP = ["--options", "clip_pretrained=null"]
TRAINED_METHODS = {  # method (variant): the flags that replace the paper's weights by random ones
    "prototype": [],
    "pfenet": [],
    "piclip": RANDOM_CLIP,
    "lfss": RANDOM_CLIP,
    "qgnet": ["--options", "prior_extractor=random"],
    "bam": ["--options", "base_learner=random"],
    "clip-dinoiser-support": ["--variant", "trained_adapter", *RANDOM_CLIP, "--options", "heads=HEADS"],
}
CPU_SAVERS = {  # minutes less on a CPU: 1 prompt template, not 85; windows for the reduced size (2 x 2 overlapping
    # windows of 64 on 97 pixels: the averaging of overlaps still runs)
    "lfss": ["--options", "templates=single"],
    "clip-dinoiser-support": ["--options", "templates=single", "--options", "window=64", "--options", "stride=64"],
}


BENCHMARKS = {"prototype": "coco"}  # COCO-20i's path through prepare, train and evaluate; the others on PASCAL-5i


IN_PROCESS = set(TRAINED_METHODS) - {"prototype"}  # the prototype's run keeps the user's two processes


def use_user_folders(prepared: dict[str, str], monkeypatch) -> None:
    """The user's data and weights folders (``prepared``'s) for code run in this process."""
    for key, value in prepared.items():
        if key.startswith(("FSSLIB_", "TORCH_", "HF_")):
            monkeypatch.setenv(key, value)


@pytest.mark.parametrize("method", sorted(TRAINED_METHODS))
def test_train_and_evaluate_through_the_command_line(prepared, home, method, tmp_path, monkeypatch, run_main,
                                                     random_builds_once):
    """Train and evaluate at the paper preset (in this process: the random ResNet-50s and CLIPs drawn once per
    session, ``random_builds_once``; the prototype's processes draw their own)."""
    flags = [flag.replace("HEADS", str(home / "last.pt")) for flag in TRAINED_METHODS[method]]
    size = [] if PAPER_SIZES else ["--image-size", str(IMAGE_SIZE), *CPU_SAVERS.get(method, [])]
    benchmark = BENCHMARKS.get(method, "pascal")
    common = ["--method", method, "--preset", "paper", "--benchmark", benchmark, "--fold", "0",
              "--backbone-weights", "random", "--no-progress", *size, *flags]
    run = tmp_path / "run"

    def cli(module: str, *arguments: str) -> str:
        if method in IN_PROCESS:  # the user's environment, in this process
            use_user_folders(prepared, monkeypatch)
            return run_main(module, *arguments)
        return command(prepared, module, *arguments)

    cli("fsslib.train", *common, "--epochs", "1", "--episodes-per-epoch", "2", "--batch-size", "2",
        "--val-episodes", "2", "--out", str(run))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and np.isfinite(log[0]["train_loss"])
    printed = cli("fsslib.evaluate", *common, "--episodes", "4", "--ckpt", str(run / "best.pt"),
                  "--out", str(tmp_path / "eval"))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (metrics["tier"], metrics["benchmark"], metrics["episodes"]) == ("paper", benchmark, 4) and "mIoU" in printed
    assert_fold_zero_scores(metrics, benchmark)


def test_each_missing_file_names_where_the_instructions_are(prepared, tmp_path, capsys, monkeypatch):
    """Each step stops with a message naming docs/paper_tier.md when its data or weights are missing."""
    from fsslib import evaluate, train
    from fsslib.data import prepare

    use_user_folders(prepared, monkeypatch)
    steps = {  # what is missing -> (the command, the file or folder its message must name)
        "data": (["--method", "pfenet", "--preset", "paper", "--backbone-weights", "random", "--data-root",
                  str(tmp_path / "nothing")], str(tmp_path / "nothing")),
        "backbone weights": (["--method", "pfenet", "--preset", "paper"], "resnet50_v2.pth"),
        "CLIP weights": (["--method", "piclip", "--preset", "paper", "--backbone-weights", "random"], "ViT-B-16"),
        "prior extractor": (["--method", "qgnet", "--preset", "paper", "--backbone-weights", "random"],
                            "prior_extractor"),
    }
    for what, argv in {"VOC archive": ["pascal", "--voc", str(tmp_path / "VOCtrainval_11-May-2012.tar"), "--sbd",
                                       str(tmp_path / "benchmark.tgz")],
                       "COCO folder": ["coco", "--root", str(tmp_path / "coco")]}.items():
        with pytest.raises(SystemExit) as stopped:
            prepare.main(argv)
        message = capsys.readouterr().err
        assert stopped.value.code == 2 and "docs/paper_tier.md" in message, (what, message)
    for what, (argv, named) in steps.items():
        for main, checkpoint in ((train.main, []), (evaluate.main, ["--ckpt", str(tmp_path / "run" / "best.pt")])):
            with pytest.raises(SystemExit) as stopped:  # training reads no --ckpt (it refuses one)
                main([*argv, "--out", str(tmp_path / "run"), *checkpoint])
            message = capsys.readouterr().err
            assert stopped.value.code == 2 and "docs/paper_tier.md" in message, (what, main, message)
            assert named in message, (what, main, message)

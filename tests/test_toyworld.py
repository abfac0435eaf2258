import json

import numpy as np
import pytest
from PIL import Image

from fsslib.data import prepare, toyworld
from fsslib.data.benchmarks import TOY
from fsslib.data.episodes import Source
from fsslib.data.layout import MARKER
from fsslib.errors import DatasetNotFoundError


def test_scenes_are_pure_functions_of_seed_split_index():
    a = toyworld.render_scene(toyworld.scene_rng(0, "train", 7))
    b = toyworld.render_scene(toyworld.scene_rng(0, "train", 7))
    c = toyworld.render_scene(toyworld.scene_rng(0, "val", 7))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)


def test_the_toy_world_is_the_one_the_committed_results_were_made_on():
    """The first 40 scenes of each split, byte for byte (images and masks): a change of how a scene is rendered,
    however small, changes the world every committed number was measured on, and fails here first."""
    import hashlib

    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        for index in range(40):
            scene = toyworld.render_scene(toyworld.scene_rng(0, split, index), 64)
            digest.update(scene.image.tobytes())
            digest.update(scene.mask.tobytes())
    assert digest.hexdigest() == "275cdde92e28bcd7db3c291cf85730086157b738c6fd7502ce40cfee7c9af0c1"


def test_masks_match_objects_and_captions():
    for index in range(100):  # a class repeats in some of them
        scene = toyworld.render_scene(toyworld.scene_rng(1, "train", index))
        present = set(np.unique(scene.mask)) - {0}
        assert present == {o.class_id for o in scene.objects}
        assert 1 <= len(scene.objects) <= 3
        for obj in scene.objects:
            assert obj.name in scene.caption  # every object is named, a repeated class too
            same_class = [o for o in scene.objects if o.class_id == obj.class_id]
            # a class's mask pixels are its objects' visible pixels (one object, or several of the class together)
            assert sum(o.visible_pixels for o in same_class) == (scene.mask == obj.class_id).sum()


def test_fold_split_is_a_latin_square_sharing_attributes_with_base_classes():
    assert len(set(toyworld.CLASS_NAMES)) == 20
    for fold in range(4):
        novel = TOY.fold_classes(fold)
        assert novel == list(range(5 * fold + 1, 5 * fold + 6))
        base_attributes = [toyworld.class_attributes(c) for c in TOY.base_classes(fold)]
        for class_id in novel:
            shape, fill = toyworld.class_attributes(class_id)
            assert sum(s == shape for s, _ in base_attributes) == 3  # its shape with the other three fills
            assert sum(f == fill for _, f in base_attributes) >= 3
        assert len({toyworld.class_attributes(c)[0] for c in novel}) == 5  # every shape once per fold


def test_colour_does_not_identify_the_class():
    colours = []
    for index in range(40):
        scene = toyworld.render_scene(toyworld.scene_rng(2, "train", index), class_ids=[1])  # solid circle
        colours.append(scene.image[scene.mask == 1].mean(axis=0))
    assert np.std(colours, axis=0).min() > 30  # instances of one class span many colours


def test_materialize_writes_voc_layout(tmp_path):
    root = toyworld.materialize(tmp_path / "toy", seed=3, counts={"train": 6, "val": 2})
    pairs = (root / "lists" / "train.txt").read_text().split("\n")[:-1]
    assert len(pairs) == 6 and pairs[0] == "JPEGImages/toy_train_000000.jpg SegmentationClassAug/toy_train_000000.png"
    label = np.asarray(Image.open(root / "SegmentationClassAug" / "toy_train_000000.png"))
    assert label.ndim == 2 and set(np.unique(label)) <= set(range(21))
    scene = toyworld.render_scene(toyworld.scene_rng(3, "train", 0))
    assert np.array_equal(label, scene.mask)
    assert (root / "JPEGImages" / "toy_val_000001.jpg").is_file()


def test_worker_processes_write_the_same_world(tmp_path, monkeypatch):
    """Scenes rendered by two processes, three scenes per task, give the files one process writes, byte for byte."""
    monkeypatch.setattr(toyworld, "SCENES_PER_TASK", 3)
    counts = {"train": 7, "val": 2}
    alone = toyworld.materialize(tmp_path / "alone", seed=4, counts=counts)
    pooled = toyworld.materialize(tmp_path / "pooled", seed=4, counts=counts, workers=2)
    files = sorted(path.relative_to(alone) for path in alone.rglob("*") if path.is_file())
    assert len(files) == 2 * 9 + 6 and files == sorted(path.relative_to(pooled) for path in pooled.rglob("*") if path.is_file())
    assert all((alone / name).read_bytes() == (pooled / name).read_bytes() for name in files)


def test_ensure_toyworld_renders_on_the_usable_cores_but_in_one_process_inside_a_daemon(tmp_path, monkeypatch):
    import multiprocessing
    from types import SimpleNamespace

    asked = []

    def stop(root, seed, workers):  # records how many processes ensure_toyworld asks for, then stops before writing
        asked.append(workers)
        raise KeyboardInterrupt

    monkeypatch.setattr(toyworld, "materialize", stop)
    monkeypatch.setattr(prepare.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    for daemon in (False, True):  # a data loader's worker is daemonic: it may start no process
        monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(daemon=daemon))
        with pytest.raises(KeyboardInterrupt):
            prepare.ensure_toyworld(tmp_path / "toy")
    assert asked == [3, 1]


def test_ensure_toyworld_writes_the_marker_last(tmp_path, monkeypatch):
    counts = {"train": 3, "val": 2, "test": 2}
    materialize = toyworld.materialize
    monkeypatch.setattr(toyworld, "materialize", lambda root, seed, workers: materialize(root, seed=seed, counts=counts,
                                                                                        workers=workers))
    root = prepare.ensure_toyworld(tmp_path / "toy", seed=5)
    assert json.loads((root / MARKER).read_text()) == {"benchmark": "toy", "seed": 5, "images": counts}
    assert Source(TOY, "val", root=root).names == ["toy_val_000000", "toy_val_000001"]

    def interrupted(root, seed, workers):
        raise KeyboardInterrupt

    monkeypatch.setattr(toyworld, "materialize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.ensure_toyworld(root, seed=6)  # another seed: regenerated in place, marker gone until done
    with pytest.raises(DatasetNotFoundError, match="not prepared completely"):
        Source(TOY, "val", root=root)


def test_ensure_toyworld_accepts_a_world_made_before_the_marker(tmp_path, monkeypatch):
    root = toyworld.materialize(tmp_path / "toy", seed=2, counts={"train": 2, "val": 1})
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "version": prepare.TOY_VERSION}))  # what older fsslib left

    def regenerate(root, seed, workers):
        raise AssertionError("a complete toy world was regenerated")

    monkeypatch.setattr(toyworld, "materialize", regenerate)
    assert prepare.ensure_toyworld(root, seed=2) == root
    assert json.loads((root / MARKER).read_text()) == {"benchmark": "toy", "seed": 2, "images": {"train": 2, "val": 1}}
    assert Source(TOY, "train", root=root).names == ["toy_train_000000", "toy_train_000001"]

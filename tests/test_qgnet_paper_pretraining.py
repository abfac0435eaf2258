"""QGNet's prior extractor pretrained on a benchmark's images (the paper tier, ``python -m fsslib.pretrain
qgnet-prior``), on a fabricated PASCAL of six JPEGs at a few pixels: the batch items, the MoCo file that QGNet's
paper tier reads, an interrupted run resumed to the same weights, and the errors of bad input."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader

import fsslib.pretrain.qgnet_prior.paper as paper
from fsslib.data.layout import mark_prepared, write_class_index, write_list
from fsslib.errors import FsslibError
from fsslib.models.backbones import load_moco_resnet50
from fsslib.pretrain import PRETRAINERS
from fsslib.pretrain.qgnet_prior.paper import (PAPER_SUPERPIXELS, EpochBatches, PaperPriorSettings, PriorImages,
                                               benchmark_images, box_window, cache_superpixels, superpixel_folder,
                                               train_paper_prior)
from fsslib.pretrain.qgnet_prior.patches import patch_crops, segment_table, superpixels
from fabricate import save_jpeg

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZES = {"2007_000001": (40, 56), "2007_000002": (48, 40), "2008_000003": (36, 36), "2008_000004": (44, 60),
         "2008_000005": (40, 48), "2008_000006": (56, 40), "2009_000007": (52, 44), "2009_000008": (40, 40)}
# name -> (height, width); the last two are val images


@pytest.fixture
def fabricated_pascal(tmp_path):
    """A prepared PASCAL root whose lists name label files that do not exist: pretraining must not read them."""
    root = tmp_path / "VOC2012"
    for index, (name, (height, width)) in enumerate(SIZES.items()):
        save_jpeg(root / "JPEGImages" / f"{name}.jpg", height, width, seed=index)
    names = list(SIZES)
    for split, members in (("train", names[:6]), ("val", names[6:])):
        write_list(root, split, [(f"JPEGImages/{n}.jpg", f"SegmentationClassAug/{n}.png") for n in members])
        write_class_index(root, split, {n: {} for n in members})
    mark_prepared(root, {"benchmark": "pascal"})
    return root


def tiny(root, tmp_path, **overrides) -> PaperPriorSettings:
    """The recipe at a few pixels: 2 epochs of one step of 4 images, on the CPU, in this process."""
    return PaperPriorSettings(**{"epochs": 2, "batch_size": 4, "image_size": 32, "patch_size": 16, "queue_size": 8,
                                 "local_queue_size": 8, "key_chunks": 2, "min_patch_area": 16, "precision": "fp32",
                                 "device": "cpu", "workers": 0, "data_root": str(root), "max_images": 4,
                                 "superpixel_cache": str(tmp_path / "superpixels"), "checkpoint_every": 1, **overrides})


def test_the_images_are_every_split_s_once_and_each_item_is_a_function_of_seed_epoch_and_position(fabricated_pascal,
                                                                                                 tmp_path):
    settings = tiny(fabricated_pascal, tmp_path, max_images=0)
    images, shown = benchmark_images(settings)
    assert [name for name, _ in images] == sorted(SIZES) and not shown
    assert [name for name, _ in benchmark_images(dataclasses.replace(settings, images="train"))[0]] == sorted(SIZES)[:6]
    folder = superpixel_folder(settings)
    assert superpixel_folder(dataclasses.replace(settings, data_root=str(tmp_path / "elsewhere"))) != folder
    assert cache_superpixels(images, shown, folder, settings.patches, workers=1, progress=False) == len(SIZES)
    assert cache_superpixels(images, shown, folder, settings.patches, workers=1, progress=False) == 0  # cached
    table = np.load(folder / "2007_000001.npz")
    assert table["segments"].shape == SIZES["2007_000001"] and table["areas"][0] == table["areas"].max()
    dataset = PriorImages(images, shown, folder, settings)
    global_pair, local_pair = dataset[0, 3]
    assert global_pair.shape == (2, 3, 32, 32) and local_pair.shape == (2, 3, 16, 16)
    assert global_pair.dtype == local_pair.dtype == torch.uint8
    assert not torch.equal(global_pair[0], global_pair[1])  # two random views
    again = PriorImages(images, shown, folder, settings)
    assert all(torch.equal(a, b) for a, b in zip(dataset[0, 3], again[0, 3]))
    assert not torch.equal(dataset[0, 3][0], again[1, 3][0])  # another epoch: another order and other views
    assert sorted(dataset.order(1)) == list(range(len(SIZES))) and list(dataset.order(1)) != list(dataset.order(0))
    # one loader for the whole run: its workers draw what this process draws, epoch after epoch
    batches = EpochBatches(len(dataset), 3, first_epoch=1, epochs=3)
    assert len(batches) == 4 and [batch[0] for batch in batches] == [(1, 0), (1, 3), (2, 0), (2, 3)]
    here = [pairs for pairs in DataLoader(dataset, batch_sampler=batches)]
    workers = [pairs for pairs in DataLoader(dataset, batch_sampler=batches, num_workers=2)]
    assert all(torch.equal(a, b) for ours, theirs in zip(here, workers) for a, b in zip(ours, theirs))
    np.savez(folder / "2007_000001.npz", segments=table["segments"][:-1], boxes=table["boxes"], areas=table["areas"])
    where = next(position for position in range(len(SIZES)) if images[dataset.order(0)[position]][0] == "2007_000001")
    with pytest.raises(FsslibError, match="made from another image"):
        dataset[0, where]


def test_a_patch_cut_from_its_box_window_equals_the_patch_cut_from_the_whole_image():
    """The loader crops a superpixel from a window around its box: the same pixels and mean colour as
    patch_crops on the whole image, segments at the border and inside alike."""
    coarse = torch.from_numpy(np.random.default_rng(0).random((1, 3, 4, 6), dtype=np.float32))
    image = torch.nn.functional.interpolate(coarse, size=(45, 61), mode="bilinear")  # a smooth colour field
    segments, boxes, areas = segment_table(superpixels((image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
                                                       "slic", PAPER_SUPERPIXELS["slic"]))
    segments, boxes = torch.from_numpy(segments), torch.from_numpy(boxes)
    touching = {"border": 0, "inside": 0}
    for segment in range(int((areas > 0).sum())):
        chosen = torch.tensor([segment])
        whole = patch_crops(image, segments[None].long(), boxes[None], chosen, 24)
        window, window_segments, box = box_window(image, segments, boxes[segment])
        windowed = boxes[None].clone()
        windowed[0, segment] = box
        torch.testing.assert_close(patch_crops(window, window_segments[None].long(), windowed, chosen, 24), whole,
                                   rtol=0, atol=1e-5)
        edges = torch.cat([segments[0], segments[-1], segments[:, 0], segments[:, -1]])
        touching["border" if (edges == segment).any() else "inside"] += 1
    assert touching["border"] and touching["inside"], touching


@pytest.mark.slow
def test_a_run_writes_the_moco_file_qgnet_reads_and_an_interrupted_run_resumes_to_the_same_weights(
        fabricated_pascal, tmp_path, monkeypatch):
    settings = tiny(fabricated_pascal, tmp_path)
    whole = tmp_path / "whole.pth.tar"
    with pytest.warns(UserWarning, match="No interrupted run to resume"):
        metadata = train_paper_prior(whole, settings, progress=False, resume=True)
    saved = torch.load(whole, map_location="cpu", weights_only=True)
    assert saved["arch"] == "resnet50" and saved["epoch"] == 2
    state = saved["state_dict"]
    assert state["module.encoder_q.fc.2.weight"].shape == (128, 2048) and state["module.local_queue"].shape == (128, 8)
    key_encoder = load_moco_resnet50(whole, "encoder_k")  # QGNet's paper tier: options={"prior_extractor": PATH}
    for name, value in key_encoder.state_dict().items():
        official = name.replace("stem.0.", "conv1.", 1) if name.startswith("stem.0.") else \
            name.replace("stem.1.", "bn1.", 1) if name.startswith("stem.1.") else name
        torch.testing.assert_close(value, state[f"module.encoder_k.{official}"], rtol=0, atol=0)
    assert not torch.equal(state["module.encoder_k.conv1.weight"], state["module.encoder_q.conv1.weight"])
    moco_v2 = torchvision.models.resnet50(num_classes=128)  # main_moco.py --mlp: fc = Linear, ReLU, the old fc
    moco_v2.fc = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.ReLU(), moco_v2.fc)
    moco_v2.load_state_dict({key.removeprefix("module.encoder_q."): value for key, value in state.items()
                             if key.startswith("module.encoder_q.")})  # strict: every name and shape
    assert state["module.queue_ptr"].shape == (1,)
    assert [point["epoch"] for point in metadata["curve"]] == [1, 2] and metadata["steps_per_epoch"] == 1
    assert all(np.isfinite(point["global"]) and np.isfinite(point["local"]) for point in metadata["curve"])
    assert metadata["curve"][1]["lr"] < metadata["curve"][0]["lr"] == pytest.approx(0.03 * 4 / 256)
    assert json.loads(whole.with_suffix(".json").read_text())["training_images"]["count"] == 4

    real_save = paper.save_checkpoint

    def stop_after_the_first_epoch(path, payload):
        real_save(path, payload)
        if payload.get("epoch") == 1:
            raise KeyboardInterrupt

    interrupted = tmp_path / "interrupted.pth.tar"
    monkeypatch.setattr(paper, "save_checkpoint", stop_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_paper_prior(interrupted, settings, progress=False)
    monkeypatch.setattr(paper, "save_checkpoint", real_save)
    with pytest.raises(FsslibError, match="other settings"):
        train_paper_prior(interrupted, dataclasses.replace(settings, lr=0.1), progress=False, resume=True)
    resumed = train_paper_prior(interrupted, dataclasses.replace(settings, workers=1), progress=False, resume=True)
    def losses(curve: list[dict]) -> list[tuple]:
        return [(point["epoch"], point["lr"], point["global"], point["local"]) for point in curve]

    assert resumed["resumed_at_epoch"] == 1 and losses(resumed["curve"]) == losses(metadata["curve"])
    again = torch.load(interrupted, map_location="cpu", weights_only=True)["state_dict"]
    for name, value in state.items():
        torch.testing.assert_close(again[name], value, rtol=0, atol=0, msg=name)
    assert not interrupted.with_name(interrupted.name + ".partial.pt").exists()


def test_the_command_line_names_what_is_missing(fabricated_pascal, tmp_path, capsys):
    command = PRETRAINERS["qgnet-prior"]
    with pytest.raises(SystemExit) as exit_:
        command.main(["--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pth.tar"), "--no-progress"])
    assert exit_.value.code == 2 and "python -m fsslib.data.prepare pascal" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        command.main(["--benchmark", "toy", "--data-root", str(fabricated_pascal), "--out", str(tmp_path / "x.tar")])
    assert "pascal, coco" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        command.main(["--data-root", str(fabricated_pascal), "--batch-size", "64", "--workers", "0", "--device", "cpu",
                      "--superpixel-cache", str(tmp_path / "sp"), "--out", str(tmp_path / "x.tar"), "--no-progress"])
    assert "make no batch of 64" in capsys.readouterr().err

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsslib.data.benchmarks import TOY
from fsslib.config import make_config
from fsslib.data.episodes import (IMAGENET_MEAN, EpisodeDataset, Source, augment_episode_batch, augment_keeping_objects,
                                  blur_all_keep_picked, blur_picked, collate_episodes, episode_batches, gaussian_blur, load_episode_image, random_augment,
                                  random_augment_batch, resize_pad, resize_short_side, resize_squash, way_mask)
from fsslib.errors import EpisodeShapeError, UnknownNameError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "toy_augmentation.py"
spec = importlib.util.spec_from_file_location("toy_augmentation", SCRIPT)
augmentation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(augmentation)


@pytest.fixture(scope="module")
def sources(toy_root):
    return {split: Source(TOY, split, cache=True) for split in ("train", "val", "test")}


def test_test_episodes_are_a_pure_function_of_the_protocol(sources):
    make = lambda seed: EpisodeDataset(sources["test"], fold=1, shots=5, image_size=64, n_episodes=50, seed=seed)
    first, again, other = make(0), make(0), make(1)
    for index in (0, 17, 49):
        a, b = first[index], again[index]
        assert a.query_name == b.query_name and a.support_names == b.support_names
        torch.testing.assert_close(a.support_images, b.support_images)
    assert [first.sample_names(i)[1] for i in range(10)] != [other.sample_names(i)[1] for i in range(10)]
    # HSNet: the query is the index-th entry of the fixed list, whatever the seed
    assert first.sample_names(3)[0] == other.sample_names(3)[0] == first.entries[3][0]


def test_episode_content(sources):
    dataset = EpisodeDataset(sources["test"], fold=0, shots=3, image_size=64, n_episodes=20)
    for episode in dataset:
        assert episode.ways == 1 and episode.class_ids[0] in TOY.fold_classes(0)
        assert episode.query_name not in episode.support_names[0] and len(set(episode.support_names[0])) == 3
        assert episode.support_images.shape == (1, 3, 3, 64, 64) and episode.support_images.max() <= 1
        assert set(episode.support_masks.unique().tolist()) <= {0, 1, 255}
        assert ((episode.support_masks == 1).flatten(2).sum(2) >= TOY.min_class_pixels).all()
        assert episode.query_label.shape == (64, 64)
    batch = collate_episodes([dataset[0], dataset[1]])
    assert batch.support_images.shape == (2, 1, 3, 3, 64, 64) and batch.query_masks.shape == (2, 64, 64)
    assert batch.class_ids.shape == (2, 1) and batch.one_way().support_images.shape == (2, 3, 3, 64, 64)


def test_training_episodes_use_base_classes_and_depend_on_epoch(sources):
    dataset = EpisodeDataset(sources["train"], fold=2, shots=1, image_size=64, n_episodes=30, seed=0, mode="train")
    assert set(dataset.classes) == set(TOY.base_classes(2))
    before = [dataset.sample_names(i) for i in range(30)]
    assert all(c not in TOY.fold_classes(2) for _, _, (c,) in before)
    dataset.set_epoch(1)
    assert before != [dataset.sample_names(i) for i in range(30)]
    dataset.set_epoch(0)
    assert before == [dataset.sample_names(i) for i in range(30)]


def test_pfenet_keeps_images_with_novel_classes_but_bam_drops_them(sources):
    novel = set(TOY.fold_classes(0))
    pfenet = EpisodeDataset(sources["train"], 0, 1, 64, mode="train", novel_rule="pfenet")
    bam = EpisodeDataset(sources["train"], 0, 1, 64, mode="train", novel_rule="bam")
    with_novel = {n for n, _ in pfenet.entries if novel & set(sources["train"].presence[n])}
    assert with_novel and not {n for n, _ in bam.entries} & with_novel
    # under PFENet's rule those images' novel pixels are plain background of the episode's class
    name, class_id = next((n, c) for n, c in pfenet.entries if n in with_novel)
    _, label = sources["train"].load(name)
    mask = way_mask(label, [class_id])
    assert (mask[torch.from_numpy(np.isin(label, list(novel)))] == 0).all()


def test_min_class_pixels_rule(sources):
    source = sources["train"]
    small = next((n, c) for n, counts in source.presence.items() for c, px in counts.items() if px < TOY.min_class_pixels)
    assert small[0] not in source.images_with(small[1])


def test_resize_pad_keeps_aspect_and_pads_with_ignore():
    image, label = torch.rand(3, 30, 60), torch.ones(30, 60)
    padded_image, padded_label = resize_pad(image, label, 40)
    assert padded_image.shape == (3, 40, 40)
    assert (padded_label[:20] == 1).all() and (padded_label[20:] == 255).all()


def test_resize_squash_fills_the_square_and_scores_at_the_unpadded_original():
    image, label = torch.rand(3, 30, 60), torch.ones(30, 60)
    squashed_image, squashed_label = resize_squash(image, label, 40)
    assert squashed_image.shape == (3, 40, 40) and (squashed_label == 1).all()  # no padding

    class OneImage:  # the part of a Source that load_episode_image reads
        def load(self, name):
            label = np.zeros((30, 60), dtype=np.uint8)
            label[:, :20] = 3
            return np.full((30, 60, 3), 128, dtype=np.uint8), label

    image_t, mask_t, original = load_episode_image(OneImage(), "x", [3], 40, resize="squash")
    assert image_t.shape == (3, 40, 40) and original.shape == (30, 60) and 255 not in original.tolist()
    assert (mask_t[:, :13] == 1).all() and (mask_t[:, 14:] == 0).all()  # a third of the width, stretched
    _, padded_mask, padded_original = load_episode_image(OneImage(), "x", [3], 40, resize="pad")
    assert padded_original.shape == (60, 60) and (padded_original[30:] == 255).all() and (padded_mask[20:] == 255).all()


def test_resize_short_side_keeps_the_aspect_without_padding_and_queries_alone_use_it(sources):
    """CLIP-DINOiser's evaluation: PASCAL's 500 x 375 goes to 597 x 448 (mmcv rounds half up), the longer
    side capped at 2048; supports stay padded squares; queries of different sizes are batched alone."""
    image, label = torch.rand(3, 375, 500), torch.ones(375, 500)
    resized_image, resized_label = resize_short_side(image, label, 448)
    assert resized_image.shape == (3, 448, 597) and resized_label.shape == (448, 597) and (resized_label == 1).all()
    assert resize_short_side(torch.rand(3, 10, 100), torch.ones(10, 100), 448)[1].shape == (205, 2048)

    class TwoImages:  # the part of a Source that load_episode_image reads
        def load(self, name):
            height, width = (30, 60) if name == "wide" else (45, 30)
            return np.full((height, width, 3), 128, dtype=np.uint8), np.full((height, width), 3, dtype=np.uint8)

    wide, tall = (load_episode_image(TwoImages(), name, [3], 40, resize="short_side") for name in ("wide", "tall"))
    assert wide[0].shape == (3, 40, 80) and tall[0].shape == (3, 60, 40)
    assert wide[2].shape == (30, 60) and 255 not in wide[2].tolist()  # scored at the unpadded original
    for mode, query_rule in (("test", "short_side"), ("train", "pad")):
        rules = EpisodeDataset(sources[mode], fold=0, shots=1, image_size=48, n_episodes=2, mode=mode, resize="short_side")
        assert (rules.query_resize, rules.support_resize) == (query_rule, "pad")


def test_queries_of_different_sizes_are_refused_in_one_batch(sources):
    first, second = (EpisodeDataset(sources["test"], 0, 1, 64, 2)[i] for i in (0, 1))
    second.query_image = second.query_image[:, :, :48]
    with pytest.raises(EpisodeShapeError, match="different sizes"):
        collate_episodes([first, second])


def test_augment_none_trains_on_the_images_as_tested(sources):
    """LFSS Sec. 4.1: no augmentation; training episodes then hold the resized images unchanged."""
    plain = EpisodeDataset(sources["train"], fold=0, shots=1, image_size=64, n_episodes=4, seed=0, mode="train",
                           augment="none", resize="squash")
    augmented = EpisodeDataset(sources["train"], fold=0, shots=1, image_size=64, n_episodes=4, seed=0, mode="train")
    for index in range(4):
        query, _, classes = plain.sample_names(index)
        image, mask, _ = load_episode_image(sources["train"], query, classes, 64, resize="squash")
        torch.testing.assert_close(plain[index].query_image, image)
        assert torch.equal(plain[index].query_mask, mask)
    assert any(not torch.equal(plain[i].query_image, augmented[i].query_image) for i in range(4))


def test_each_paper_s_data_rule_is_its_preset_s():
    lfss = make_config(method="lfss", preset="toy")
    assert (lfss.augment, lfss.resize) == ("none", "squash")
    assert (make_config(method="lfss", preset="paper").augment, make_config(method="lfss", preset="paper").resize) == (
        "none", "squash")
    control = make_config(method="lfss", preset="toy", variant="pfenet_augment")  # a variant may set config fields
    assert (control.augment, control.resize) == ("pfenet", "pad") and control.options == lfss.options
    for method in ("pfenet", "piclip", "qgnet", "prototype"):
        cfg = make_config(method=method, preset="paper")
        assert (cfg.augment, cfg.resize) == ("pfenet", "pad"), method


@pytest.mark.parametrize("bad", [{"augment": "heavy"}, {"resize": "crop"}])
def test_unknown_augmentation_or_resize_rule_names_the_choices(sources, bad):
    with pytest.raises(UnknownNameError, match=next(iter(bad.values()))):  # names the bad rule (and the choices)
        EpisodeDataset(sources["train"], fold=0, shots=1, image_size=64, n_episodes=4, mode="train", **bad)


def test_augmentation_pads_label_with_ignore_and_keeps_values():
    """The warp moves labels, never blends them: only 0, 1 and the ignore label 255 where the warp reaches outside
    the image (a rotation's corners); the object keeps about its area (scale 0.9-1.1)."""
    label = torch.zeros(64, 64)
    label[20:40, 20:40] = 1
    rng = np.random.default_rng(0)
    padded = 0
    for _ in range(8):
        _, augmented = random_augment(torch.rand(3, 64, 64), label, rng)
        assert set(augmented.unique().tolist()) <= {0, 1, 255}
        assert 0.75 < (augmented == 1).sum().item() / 400 < 1.3
        padded += bool((augmented == 255).any())
    assert padded > 0


@pytest.mark.parametrize("shots, episodes", [(1, 16), (5, 4)])
def test_a_training_episode_is_its_images_augmented_one_at_a_time(sources, shots, episodes):
    """The episode's images are warped in one batch; each equals the image augmented alone, in turn from the
    episode's generator (query first, then the supports), and kept unwarped when the warp loses its object."""
    dataset = EpisodeDataset(sources["train"], fold=2, shots=shots, image_size=64, n_episodes=episodes, seed=3,
                             mode="train")
    dataset.set_epoch(4)
    assert all(augmentation.same_episode(dataset, index) for index in range(episodes))


def test_an_image_whose_warp_loses_its_object_stays_as_it_was():
    """Image 1's object is a 2 x 2 corner that some warps move out of view: then it stays unwarped, while image 0's
    central object is warped every time."""
    lost = 0
    for seed in range(20):
        images, masks = torch.rand(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long)
        masks[0, 8:24, 8:24] = 1
        masks[1, 0:2, 0:2] = 1
        warped, warped_masks = random_augment_batch(images, masks, np.random.default_rng(seed))
        kept, kept_masks = augment_keeping_objects(images, masks, np.random.default_rng(seed))
        assert torch.equal(kept[0], warped[0]) and not torch.equal(kept[0], images[0])
        in_view = bool((warped_masks[1] == 1).any())
        lost += not in_view
        expected = (warped[1], warped_masks[1]) if in_view else (images[1], masks[1])
        assert torch.equal(kept[1], expected[0]) and torch.equal(kept_masks[1], expected[1])
    assert 0 < lost < 20  # some warps lose the corner, some keep it


def augment_alone_as_before(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator):
    """fsslib's per-image augmentation before the batched warp, transcribed: the reference of the draw order."""
    scale = rng.uniform(0.9, 1.1)
    angle = math.radians(rng.uniform(-10, 10))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos * flip, -sin, 0.0], [sin * flip, cos, 0.0]]).unsqueeze(0)
    grid = F.affine_grid(theta, [1, 3, *label.shape], align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    warped = F.grid_sample(image[None] - mean, grid, mode="bilinear", align_corners=False)[0] + mean[0]
    shifted = F.grid_sample(label[None, None].float() + 1, grid, mode="nearest", align_corners=False)[0, 0]
    warped_label = torch.where(shifted == 0, torch.full_like(shifted, 255), shifted - 1).long()
    if rng.random() < 0.5:
        warped = gaussian_blur(warped[None], torch.tensor([float(rng.uniform(0.1, 1.0))]), radius=2)[0]
    return warped.clamp(0, 1), warped_label


def test_each_image_draws_and_warps_as_the_per_image_augmentation_did():
    """The batch draws each image's scale, angle, flip, blur and sigma in turn, as the per-image code drew them."""
    for seed in range(12):
        generator = torch.Generator().manual_seed(seed)
        images = torch.rand(4, 3, 40, 40, generator=generator)
        labels = torch.randint(0, 3, (4, 40, 40), generator=generator)
        before = np.random.default_rng(seed)
        expected = [augment_alone_as_before(images[i], labels[i], before) for i in range(4)]
        warped, warped_labels = random_augment_batch(images, labels, np.random.default_rng(seed))
        assert torch.equal(warped, torch.stack([image for image, _ in expected]))
        assert torch.equal(warped_labels, torch.stack([label for _, label in expected]))


@pytest.mark.parametrize("shots", [1, 3])
def test_episodes_augmented_on_the_device_equal_the_loader_s_bit_for_bit(sources, shots):
    """augment_on="device": the loader draws each episode's parameters from the same generator and leaves the warp
    and blur to augment_episode_batch, which gives the loader's batch, bit for bit on the CPU, every epoch."""
    make = lambda where: EpisodeDataset(sources["train"], fold=1, shots=shots, image_size=64, n_episodes=24, seed=3,
                                        mode="train", augment_on=where)
    loader, device = make("loader"), make("device")
    for epoch in (0, 5):
        loader.set_epoch(epoch), device.set_epoch(epoch)
        for start in range(0, 24, 8):
            expected = collate_episodes([loader[i] for i in range(start, start + 8)])
            left = collate_episodes([device[i] for i in range(start, start + 8)])
            assert left.augment_thetas.shape == (8, 1 + shots, 2, 3) and left.augment_sigmas.shape == (8, 1 + shots)
            assert expected.augment_thetas is None and not torch.equal(left.query_images, expected.query_images)
            done = augment_episode_batch(left)
            for name in ("query_images", "query_masks", "support_images", "support_masks"):
                assert torch.equal(getattr(done, name), getattr(expected, name)), name
            assert done.augment_thetas is None and augment_episode_batch(done) is done
    with pytest.raises(UnknownNameError, match="--augment-on"):
        make("gpu")


def test_the_gpu_s_blur_of_every_image_keeps_the_picked_ones_as_the_cpu_s_blurs_them():
    """On a GPU every image is blurred and the picked ones kept (reading which to pick would make the host wait):
    the same images as blurring only the picked ones; the unpicked ones unchanged."""
    images = torch.rand(6, 3, 33, 33, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([0.3, math.nan, 0.9, math.nan, math.nan, 0.5])
    picked, everywhere = blur_picked(images, sigmas), blur_all_keep_picked(images, sigmas)
    torch.testing.assert_close(everywhere, picked)
    assert torch.equal(picked[[1, 3, 4]], images[[1, 3, 4]]) and not torch.equal(picked[0], images[0])
    assert torch.equal(blur_picked(images, torch.full((6,), math.nan)), images)


def test_n_way_episodes_are_pure_and_keep_the_one_way_query(sources):
    make = lambda ways: EpisodeDataset(sources["test"], fold=3, shots=2, image_size=64, n_episodes=40, seed=0, ways=ways)
    one_way, three_way, again = make(1), make(3), make(3)
    for index in (0, 5, 39):
        episode = three_way[index]
        assert episode.support_images.shape == (3, 2, 3, 64, 64) and episode.support_masks.shape == (3, 2, 64, 64)
        assert len(set(episode.class_ids)) == 3 and all(c in TOY.fold_classes(3) for c in episode.class_ids)
        # the 1-way episode's query and class, with N - 1 more classes; the query label holds 0..N and 255
        query, _, (class_id,) = one_way.sample_names(index)
        assert episode.query_name == query and class_id in episode.class_ids
        assert set(episode.query_label.unique().tolist()) <= {0, 1, 2, 3, 255}
        assert (episode.query_label == episode.class_ids.index(class_id) + 1).any()
        _, label = sources["test"].load(query)
        for way, way_class in enumerate(episode.class_ids, start=1):  # every way's pixels carry its number
            assert ((episode.query_label[:64, :64] == way) == torch.from_numpy(label == way_class)).all()
        torch.testing.assert_close(again[index].support_images, episode.support_images)
        assert again[index].support_names == episode.support_names
    assert [three_way.sample_names(i)[2] for i in range(10)] != [make(2).sample_names(i)[2] for i in range(10)]


def test_one_way_view_of_an_n_way_batch(sources):
    dataset = EpisodeDataset(sources["test"], fold=1, shots=1, image_size=64, n_episodes=3, ways=2)
    batch = collate_episodes([dataset[i] for i in range(3)])
    view = batch.one_way()
    assert view.support_images.shape == (6, 1, 3, 64, 64) and view.class_ids.tolist() == batch.class_ids.flatten().tolist()
    for row in range(6):  # row b * N + n: episode b, way n + 1
        episode, way = divmod(row, 2)
        expected = torch.where(batch.query_masks[episode] == 255, 255, (batch.query_masks[episode] == way + 1).long())
        assert torch.equal(view.query_masks[row], expected)
        assert torch.equal(view.query_images[row], batch.query_images[episode])


def test_bad_ways_and_mixed_batches_are_refused(sources):
    with pytest.raises(UnknownNameError, match="number of ways"):
        EpisodeDataset(sources["test"], fold=0, shots=1, image_size=64, ways=6)
    with pytest.raises(UnknownNameError, match="training episodes"):
        EpisodeDataset(sources["train"], fold=0, shots=1, image_size=64, mode="train", ways=2)
    one, two = (EpisodeDataset(sources["test"], 0, 1, 64, 2, ways=w)[0] for w in (1, 2))
    with pytest.raises(EpisodeShapeError, match="cannot share a batch"):
        collate_episodes([one, two])


def test_episode_batches_walk_the_test_episodes_in_order(sources):
    dataset = EpisodeDataset(sources["test"], fold=0, shots=1, image_size=32, n_episodes=7, seed=0)
    batches = list(episode_batches(dataset, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    torch.testing.assert_close(torch.cat([b.query_images for b in batches]),
                               torch.stack([dataset[i].query_image for i in range(7)]))
    assert [len(b) for b in episode_batches(dataset, 4, count=5)] == [4, 1]


@pytest.mark.parametrize("shape", [(3, 65, 65), (3, 100, 81), (1, 7, 9)])
def test_the_blur_is_torchvision_s_bit_for_bit(shape):
    """PFENet's augmentation and the base learner's blur use fsslib's one Gaussian blur (the pretraining views' too),
    which spares the training processes torchvision's import: their images, hence every committed toy result, are
    unchanged."""
    from torchvision.transforms.functional import gaussian_blur as torchvision_blur

    generator = torch.Generator().manual_seed(0)
    for kernel_size in (3, 5):
        for sigma in (0.1, 0.37, 1.0, 1.1, 2.5):
            image = torch.rand(shape, generator=generator)
            blurred = gaussian_blur(image[None], torch.tensor([sigma]), radius=kernel_size // 2)[0]
            assert torch.equal(blurred, torchvision_blur(image, kernel_size=kernel_size, sigma=sigma)), (kernel_size, sigma)

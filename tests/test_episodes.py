import numpy as np
import pytest
import torch

from fsslib.data.benchmarks import TOY
from fsslib.data.episodes import EpisodeDataset, Source, binary_mask, collate_episodes, random_augment, resize_pad, sample_n_way


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
        assert episode.class_id in TOY.fold_classes(0)
        assert episode.query_name not in episode.support_names and len(set(episode.support_names)) == 3
        assert episode.support_images.shape == (3, 3, 64, 64) and episode.support_images.max() <= 1
        assert set(episode.support_masks.unique().tolist()) <= {0, 1, 255}
        assert ((episode.support_masks == 1).flatten(1).sum(1) >= TOY.min_class_pixels).all()
        assert episode.query_label.shape == (64, 64)
    batch = collate_episodes([dataset[0], dataset[1]])
    assert batch.support_images.shape == (2, 3, 3, 64, 64) and batch.query_masks.shape == (2, 64, 64)


def test_training_episodes_use_base_classes_and_depend_on_epoch(sources):
    dataset = EpisodeDataset(sources["train"], fold=2, shots=1, image_size=64, n_episodes=30, seed=0, mode="train")
    assert set(dataset.classes) == set(TOY.base_classes(2))
    before = [dataset.sample_names(i) for i in range(30)]
    assert all(c not in TOY.fold_classes(2) for _, _, c in before)
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
    mask = binary_mask(label, class_id)
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


def test_augmentation_pads_label_with_ignore_and_keeps_values():
    label = torch.zeros(64, 64)
    label[20:40, 20:40] = 1
    rng = np.random.default_rng(0)
    _, augmented = random_augment(torch.rand(3, 64, 64), label, rng)
    assert set(augmented.unique().tolist()) <= {0, 1, 255}


def test_n_way_episode(sources):
    episode = sample_n_way(sources["test"], fold=3, ways=3, shots=2, image_size=64, seed=0, index=5)
    assert episode.support_images.shape == (3, 2, 3, 64, 64) and episode.support_masks.shape == (3, 2, 64, 64)
    assert set(episode.query_mask.unique().tolist()) <= {0, 1, 2, 3, 255} and (episode.query_mask == 1).any()
    assert all(c in TOY.fold_classes(3) for c in episode.class_ids)
    again = sample_n_way(sources["test"], fold=3, ways=3, shots=2, image_size=64, seed=0, index=5)
    torch.testing.assert_close(again.support_images, episode.support_images)

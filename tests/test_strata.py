"""Strata of the toy test episodes (fsslib.data.strata): descriptors read off the labels, and the per-episode
counts that evaluation keeps for them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fsslib import evaluate
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset
from fsslib.data.strata import describe_episodes, episode_strata
from fsslib.data.toyworld import class_attributes
from fsslib.engine import open_source
from fsslib.errors import FsslibError
from fsslib.metrics import episodes_miou


@pytest.fixture(scope="module")
def test_episodes():
    return EpisodeDataset(open_source(make_config(), "test"), fold=2, shots=5, image_size=64, n_episodes=60, seed=0)


def test_descriptors_are_read_off_each_episodes_labels(test_episodes):
    described = describe_episodes(test_episodes)
    source = test_episodes.source
    for index in (0, 17, 59):
        query, supports, (class_id,) = test_episodes.sample_names(index)
        label = source.load(query)[1]
        assert described["target_share"][index] == pytest.approx((label == class_id).mean())
        assert described["support_share"][index] == pytest.approx(np.mean([(source.load(n)[1] == class_id).mean()
                                                                            for n in supports[0]]))
        others = [class_attributes(int(c)) for c in np.unique(label) if c not in (0, 255, class_id)]
        shape, fill = class_attributes(class_id)
        assert described["shape_distractor"][index] == any(s == shape for s, _ in others)
        assert described["fill_distractor"][index] == any(f == fill for _, f in others)
        assert described["query_classes"][index] == 1 + len(others)


def test_strata_split_target_size_in_thirds_and_name_every_episode(test_episodes):
    strata = episode_strata(describe_episodes(test_episodes))
    sizes = strata["target size"]
    counts = [int((sizes == name).sum()) for name in ("small", "medium", "large")]
    assert sum(counts) == 60 and all(17 <= count <= 23 for count in counts)  # thirds, up to ties of pixel counts
    assert set(strata["support vs query size"]) <= {"similar", "support larger", "support smaller"}
    assert all(len(labels) == 60 for labels in strata.values())


def test_a_target_share_at_a_cut_off_goes_to_the_larger_stratum():
    shares = np.array([0.1, 0.2, 0.2, 0.2, 0.3, 0.4, 0.4])  # cut-offs: the 1/3 and 2/3 quantiles, 0.2 and 0.3
    descriptors = {"target_share": shares, "support_share": shares, "shape_distractor": np.zeros(7, bool),
                   "fill_distractor": np.zeros(7, bool), "query_classes": np.ones(7, int), "class_id": np.ones(7, int)}
    assert np.quantile(shares, [1 / 3, 2 / 3]).tolist() == [0.2, 0.3]  # both fall on episodes' shares
    assert episode_strata(descriptors)["target size"].tolist() == ["small", "medium", "medium", "medium", "large",
                                                                   "large", "large"]


def test_strata_refuse_episodes_they_cannot_describe():
    two_way = EpisodeDataset(open_source(make_config(), "test"), fold=0, shots=1, image_size=64, n_episodes=4, ways=2)
    with pytest.raises(FsslibError, match="1-way toy test episodes"):
        describe_episodes(two_way)


def test_evaluation_keeps_the_counts_that_give_its_miou(tmp_path):
    cfg = make_config(method="all-foreground", fold=1, episodes=50, out=tmp_path, progress=False)
    metrics = evaluate.run(cfg)
    saved = np.load(tmp_path / "episodes.npz")
    assert saved["counts"].shape == (50, 2, 2) and saved["class_ids"].shape == (50, 1)
    classes = sorted(set(saved["class_ids"][:, 0].tolist()))
    index = torch.tensor([classes.index(c) for c in saved["class_ids"][:, 0].tolist()])
    miou = episodes_miou(torch.from_numpy(saved["counts"][:, 1]), index, len(classes))
    assert 100 * float(miou) == pytest.approx(metrics["miou"])

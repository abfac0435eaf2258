"""The 2-way error diagnosis (benchmarks/two_way_errors.py): its AUC, its prior hook and its missing-model message."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from fsslib.blocks import blank_outside_masks
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, episode_batches
from fsslib.engine import load_model, open_source
from fsslib.errors import FsslibError
from fsslib.models.backbones import IMAGENET_MEAN

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "two_way_errors.py"
spec = importlib.util.spec_from_file_location("two_way_errors", SCRIPT)
two_way_errors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(two_way_errors)


def test_auc_counts_pairs_and_half_ties():
    assert two_way_errors.auc(torch.tensor([2.0, 3.0]), torch.tensor([1.0])) == 1.0
    assert two_way_errors.auc(torch.tensor([1.0]), torch.tensor([2.0, 3.0])) == 0.0
    assert two_way_errors.auc(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 2.0])) == pytest.approx(0.625)  # (1+1+0.5+0)/4


def test_a_missing_ablation_model_names_the_grid_that_makes_it(tmp_path):
    with pytest.raises(FsslibError, match="piclip_baselines_toy.yaml"):
        two_way_errors.checkpoint("piclip-hdmnet", "vvp", "piclip_baselines_toy", tmp_path)
    assert two_way_errors.checkpoint("hdmnet", "", None, tmp_path) == "zoo"


@pytest.mark.budget(60)
def test_the_hook_reads_hdmnets_own_similarity_maps_and_the_shares_are_percentages():
    """The maps read before query_merge, divided by the scale, are HDMNet's raw similarity maps."""
    cfg = make_config(method="hdmnet", preset="toy", fold=0, shots=1, ways=2, ckpt="zoo", episodes=4, device="cpu")
    model = load_model(cfg, torch.device("cpu")).eval()
    assert two_way_errors.prior_names(model) == ["similarity, embedding", "similarity, layer4"]
    captured = []
    hook = model.query_merge.register_forward_pre_hook(
        lambda _module, args: captured.append(args[0][:, -2:] / two_way_errors.prior_scale(model)))
    dataset = EpisodeDataset(open_source(cfg, "test"), 0, 1, cfg.image_size, 4, 0, mode="test")
    batch = next(episode_batches(dataset, 4)).inputs().one_way()
    masks = batch.support_masks.flatten(0, 1)  # (B*K, H, W)
    with torch.no_grad():
        model.segment(batch)
        hook.remove()
        supports = blank_outside_masks(batch.support_images.flatten(0, 1), masks, IMAGENET_MEAN)
        expected = model.similarity_maps(model.frozen_features(batch.query_images), model.frozen_features(supports),
                                         masks, 1)  # (B, 2, h, w)
    torch.testing.assert_close(captured[0], expected)
    result = two_way_errors.measure("hdmnet", "", {}, None, 4, Path("unused"))
    assert all(0 <= result[key] <= 100 for key in ("miou", "found", "taken", "absent_fires"))
    assert [name for name, *_ in result["priors"]] == ["similarity, embedding", "similarity, layer4"]

"""The base learners' feature control (benchmarks/base_learner_features.py): its AUC, and which base learners it
reads."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "base_learner_features.py"
spec = importlib.util.spec_from_file_location("base_learner_features", SCRIPT)
base_learner_features = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base_learner_features)

pytestmark = pytest.mark.budget(10)


def test_the_auc_is_the_share_of_target_non_target_pairs_ranked_right_ties_counting_half():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40,), generator=generator).float()  # many ties
    target = torch.rand(40, generator=generator) < 0.3
    pairs = scores[target][:, None] - scores[~target][None, :]
    expected = float(((pairs > 0).float() + 0.5 * (pairs == 0).float()).mean())
    assert base_learner_features.pixel_auc(scores, target) == pytest.approx(expected, abs=1e-6)
    assert base_learner_features.pixel_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, False, False])) == 1.0


def test_the_base_learners_read_are_fold_0_float32_seed_0_each_setting_once(tmp_path):
    """The zoo's base learner and a run with the same epochs and rate are one setting; other seeds and bf16 runs
    are left out (their weights may be there)."""
    zoo = base_learner_features.REPO / "fsslib" / "checkpoints" / "zoo" / "base-learner-fold0.json"
    record = json.loads(zoo.read_text())
    for name, seed, precision, epochs in (("fold0-e24-s0", 0, "fp32", record["settings"]["epochs"]),
                                          ("fold0-e48-s1", 1, "fp32", 48), ("fold0-e24-s0-bf16", 0, "bf16", 24),
                                          ("fold0-e96-s0", 0, "fp32", 96)):
        twin = {**record, "seed": seed, "settings": {**record["settings"], "precision": precision, "epochs": epochs}}
        (tmp_path / f"{name}.json").write_text(json.dumps(twin))
        (tmp_path / f"{name}.pt").write_bytes(b"")
    (tmp_path / "fold0-e192-s0.json").write_text(json.dumps(record))  # no weights: not read
    read = base_learner_features.base_learners(tmp_path)
    assert [(r["settings"]["lr"], r["settings"]["epochs"]) for _, r in read] == [
        (record["settings"]["lr"], record["settings"]["epochs"]), (record["settings"]["lr"], 96)]


def test_the_similarity_maps_of_the_zoo_s_base_learner_find_the_target_better_than_chance():
    zoo = base_learner_features.REPO / "fsslib" / "checkpoints" / "zoo" / "base-learner-fold0.pt"
    aucs = base_learner_features.similarity_aucs(zoo, episodes=8)
    assert set(aucs) == {"embedding", "layer4"} and all(0.5 < value <= 1 for value in aucs.values())

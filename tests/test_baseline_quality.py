"""The prototype baseline must beat the all-foreground reference clearly on every toy fold."""
import pytest

from fsslib import evaluate, train


@pytest.mark.slow
@pytest.mark.parametrize("fold", [0, 1, 2, 3])
def test_prototype_beats_all_foreground(fold, tiny_cfg, tmp_path):
    # 200 training episodes: margins of 10 to 24 points on the four folds (measured), twice the 5 asked for
    settings = dict(fold=fold, epochs=1, episodes_per_epoch=200, val_episodes=20, episodes=100, batch_size=8, smoke=False)
    summary = train.run(tiny_cfg(method="prototype", out=str(tmp_path / "train"), **settings))
    learned = evaluate.run(tiny_cfg(method="prototype", ckpt=summary["checkpoint"], out=str(tmp_path / "eval"), **settings))
    reference = evaluate.run(tiny_cfg(method="all-foreground", out=str(tmp_path / "ref"), **settings))
    assert learned["miou"] > reference["miou"] + 5, (learned["miou"], reference["miou"])

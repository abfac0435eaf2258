"""MaskCLIP as a few-shot method: the class name is the only support."""
import pytest
import torch
import torch.nn.functional as F

from fsslib import evaluate
from fsslib.clip import class_embeddings, segment_with_text
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, Source, collate_episodes
from fsslib.data.benchmarks import TOY
from fsslib.errors import UnknownNameError
from fsslib.methods import build_method


@pytest.fixture(scope="module")
def model(toy_root):
    return build_method(make_config(method="maskclip", smoke=True))


def test_foreground_is_where_the_episode_class_wins_the_vocabulary(model, toy_root):
    episodes = EpisodeDataset(Source(TOY, "test", cache=True), fold=1, shots=1, image_size=64, n_episodes=4)
    batch = collate_episodes(list(episodes))
    with torch.no_grad():
        logits = model(batch.inputs())  # (B, 2, 64, 64)
        scores = segment_with_text(model.bundle, batch.query_images, class_embeddings(model.bundle, model.vocabulary),
                                   temperature=model.bundle.logit_temperature)  # (B, 21, h, w)
    assert logits.shape == (4, 2, 64, 64) and len(model.vocabulary) == 21
    winner = F.interpolate(scores, size=(64, 64), mode="bilinear", align_corners=False).argmax(1)  # (B, 64, 64)
    expected = winner == (batch.class_ids[:, 0] - 1)[:, None, None]
    assert torch.equal(logits.argmax(1) == 1, expected)


def test_maskclip_needs_no_checkpoint_and_writes_metrics(tiny_cfg, tmp_path):
    metrics = evaluate.run(tiny_cfg(method="maskclip", episodes=16, out=str(tmp_path / "mc")))
    reference = evaluate.run(tiny_cfg(method="all-foreground", episodes=16, out=str(tmp_path / "fg")))
    assert metrics["method"] == "maskclip" and metrics["episodes"] == 16
    assert metrics["miou"] > reference["miou"] + 10  # the class name localises: far above all-foreground
    assert metrics["torch"] == torch.__version__ and metrics["commit"] and metrics["device"] == "cpu"


def test_unknown_template_set(toy_root):
    with pytest.raises(UnknownNameError, match="option templates"):
        build_method(make_config(method="maskclip", options={"templates": "fancy"}))


def test_a_benchmark_without_background_names_is_warned_about():
    """A dataset folder names no background: MaskCLIP and LFSS would put every pixel into a class (lesson 09 measures
    what it costs), so they say so and name the option; a chosen vocabulary, or a benchmark's own, is used silently."""
    import warnings

    from fsslib.clip import background_vocabulary

    with pytest.warns(UserWarning, match=r"'folder' names no background, so MaskCLIP's(.|\n)*background_names="):
        assert background_vocabulary("folder") == []
    with pytest.warns(UserWarning, match="so LFSS's pseudo-mask rule's vocabulary"):
        background_vocabulary("folder", method="LFSS's pseudo-mask rule")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert background_vocabulary("folder", warn=False) == []  # a rule that reads no background names
        assert background_vocabulary("folder", ("empty scene",)) == ["empty scene"]
        assert background_vocabulary("toy") == ["empty scene"] and background_vocabulary("coco") == []
        assert background_vocabulary("pascal", ()) == []

import math

import pytest
import torch

from fsslib.errors import EpisodeShapeError
from fsslib.metrics import FewShotMeter, RegionMapMeter, intersection_union


def test_intersection_union_ignores_255():
    label = torch.tensor([[1, 1, 0], [0, 255, 255]])
    prediction = torch.tensor([[1, 0, 1], [0, 1, 0]])
    counts = intersection_union(prediction, label)
    # valid pixels: 4. fg: pred {(0,0),(0,2)}, label {(0,0),(0,1)} -> I 1, U 3; bg: pred {(0,1),(1,0)}, label {(0,2),(1,0)} -> I 1, U 3
    assert counts.tolist() == [[1, 3], [1, 3]]


def test_miou_sums_over_episodes_of_a_class_not_mean_of_episode_ious():
    meter = FewShotMeter([1, 2], {1: "a", 2: "b"})
    big = torch.zeros(10, 10, dtype=torch.long)
    big[:5] = 1  # 50 fg pixels
    meter.update(big, big, 1)  # class a, IoU 1 with I = U = 50
    small_label = torch.zeros(10, 10, dtype=torch.long)
    small_label[0, :2] = 1
    small_prediction = torch.zeros(10, 10, dtype=torch.long)
    small_prediction[0, 0] = 1
    meter.update(small_prediction, small_label, 1)  # class a, I 1, U 2
    meter.update(small_prediction, small_label, 2)  # class b, I 1, U 2
    ious = meter.class_iou()
    assert ious[1] == pytest.approx(51 / 52)  # not (1 + 0.5) / 2
    assert ious[2] == pytest.approx(0.5)
    assert meter.miou == pytest.approx((51 / 52 + 0.5) / 2)
    summary = meter.summary()
    assert summary["per_class_iou"] == {"a": pytest.approx(100 * 51 / 52), "b": pytest.approx(50.0)}
    assert summary["episodes"] == 3


def test_fbiou_accumulates_foreground_and_background_over_all_episodes():
    meter = FewShotMeter([1])
    label = torch.tensor([[1, 0], [0, 0]])
    meter.update(torch.tensor([[1, 1], [0, 0]]), label, 1)  # fg I1 U2; bg I2 U3
    meter.update(torch.ones(2, 2, dtype=torch.long), label, 1)  # fg I1 U4; bg I0 U3
    assert meter.fbiou == pytest.approx(((1 + 1) / (2 + 4) + (2 + 0) / (3 + 3)) / 2)


def test_class_never_seen_is_left_out_of_miou():
    meter = FewShotMeter([1, 2])
    meter.update(torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long), 1)
    assert meter.class_iou() == {1: 1.0}
    assert meter.miou == 1.0


def test_score_at_label_size_matches_one_episode_at_a_time():
    import torch.nn.functional as F

    from fsslib.metrics import score_at_label_size

    torch.manual_seed(0)
    maps = torch.rand(3, 2, 8, 8)  # (B, 1+N, h, w) logits
    labels = [torch.randint(0, 2, (16, 16)), torch.randint(0, 2, (20, 12)), torch.randint(0, 2, (16, 16))]
    labels[1][0, :4] = 255
    batched, looped = FewShotMeter([1, 2]), FewShotMeter([1, 2])
    score_at_label_size(batched, maps, labels, [1, 2, 1], lambda up: up.argmax(1))
    for logits, label, class_id in zip(maps, labels, [1, 2, 1]):
        upsampled = F.interpolate(logits[None], size=label.shape, mode="bilinear", align_corners=True)
        looped.update(upsampled.argmax(1)[0], label, class_id)
    assert batched.summary() == looped.summary() and batched.episodes == 3


def test_upsampling_aligns_corners_as_pfenet_and_hsnet():
    """A 2x2 logit map upsampled to 4x4: aligned corners keep the corner pixels' values, which decides this case."""
    from fsslib.metrics import score_at_label_size

    logits = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]], [[1.0, -1.0], [-1.0, -1.0]]]])  # (1, 2, 2, 2): fg wins top-left
    label = torch.zeros(4, 4, dtype=torch.long)
    label[0, :2] = 1
    meter = FewShotMeter([1])
    score_at_label_size(meter, logits, [label], [1], lambda up: up.argmax(1))
    # aligned corners: fg where 1 - 2t > 0 along the top-left corner's bilinear ramp -> pixels (0, 0), (0, 1), (1, 0)
    assert meter.per_class[0].tolist() == [2, 3]


def test_two_way_episode_by_hand():
    """2-way: each way's class gets its own I and U; FB-IoU's foreground is any way."""
    meter = FewShotMeter([1, 2, 3])
    label = torch.tensor([[1, 1, 2, 0], [0, 0, 2, 255]])
    prediction = torch.tensor([[1, 2, 2, 0], [1, 0, 0, 2]])
    meter.update(prediction[None], label[None], torch.tensor([[3, 1]]))  # way 1 = class 3, way 2 = class 1
    # way 1 (class 3): pred {(0,0),(1,0)}, label {(0,0),(0,1)} -> I 1, U 3
    # way 2 (class 1): pred {(0,1),(0,2)} (the 255 pixel is ignored), label {(0,2),(1,2)} -> I 1, U 3
    assert meter.class_iou() == {1: pytest.approx(1 / 3), 3: pytest.approx(1 / 3)}
    assert meter.miou == pytest.approx(1 / 3)
    # foreground (any way): pred {(0,0),(0,1),(0,2),(1,0)}, label {(0,0),(0,1),(0,2),(1,2)} -> I 3, U 5
    # background: pred {(0,3),(1,1),(1,2)}, label {(0,3),(1,0),(1,1)} -> I 2, U 4
    assert meter.fbiou == pytest.approx((3 / 5 + 2 / 4) / 2)


def test_meter_refuses_values_it_cannot_score():
    meter = FewShotMeter([1, 2])
    label = torch.tensor([[[0, 1], [2, 2]]])
    with pytest.raises(EpisodeShapeError, match="cannot be scored"):
        meter.update(torch.zeros(1, 2, 2, dtype=torch.long), label, [1])  # a 2-way label scored as 1-way
    with pytest.raises(EpisodeShapeError, match="cannot be scored"):
        meter.update(torch.full((1, 2, 2), 3), label, torch.tensor([[1, 2]]))
    with pytest.raises(EpisodeShapeError, match="not among"):
        meter.update(torch.zeros(1, 2, 2, dtype=torch.long), label, torch.tensor([[1, 7]]))
    assert meter.episodes == 0


def test_region_map_recall_eq16_is_strictly_above_the_threshold_over_all_episodes():
    maps = torch.tensor([[[0.9, 0.5, 0.2, 0.0]], [[0.6, 0.1, 0.7, 1.0]]])  # (2, 1, 4)
    labels = torch.tensor([[[1, 1, 0, 255]], [[2, 0, 0, 0]]])  # objects (any way): 0.9, 0.5, 0.6; background: 0.2, 0.1, 0.7, 1.0
    meter = RegionMapMeter(thresholds=(0.5, 0.65))
    meter.update(maps[:1], labels[:1])
    meter.update(maps[1:], labels[1:])
    summary = meter.summary()
    assert summary["recall"] == pytest.approx([200 / 3, 100 / 3])  # V > 0.5: 0.9, 0.6 (0.5 is not above); V > 0.65: 0.9
    assert summary["background_share"] == pytest.approx([50.0, 50.0])  # 0.7 and 1.0 of four background pixels
    assert summary["mean_on_objects"] == pytest.approx(2.0 / 3)
    assert summary["mean_on_background"] == pytest.approx(0.5)
    with pytest.raises(EpisodeShapeError, match="upsample"):
        meter.update(maps, labels[:, :, :2])
    only_objects = RegionMapMeter(thresholds=(0.5,))
    only_objects.update(maps[:1, :, :2], labels[:1, :, :2])  # no background pixel: its share is unknown, not 0
    assert only_objects.summary()["recall"] == [50.0] and math.isnan(only_objects.summary()["background_share"][0])
    assert math.isnan(RegionMapMeter().summary()["mean_on_objects"])


def test_kept_episodes_give_the_meters_miou_in_one_batched_call():
    from fsslib.metrics import episodes_miou

    generator = torch.Generator().manual_seed(0)
    meter = FewShotMeter([3, 7, 9], keep_episodes=True)
    labels = torch.randint(0, 2, (12, 8, 8), generator=generator)
    predictions = torch.randint(0, 2, (12, 8, 8), generator=generator)
    classes = torch.tensor([3, 7, 9, 3, 3, 7, 9, 9, 3, 7, 3, 3])
    meter.update(predictions[:5], labels[:5], classes[:5])
    meter.update(predictions[5:], labels[5:], classes[5:])
    counts, ids = meter.kept_episodes()
    assert counts.shape == (12, 2, 2) and ids[:, 0].tolist() == classes.tolist()
    index = torch.tensor([{3: 0, 7: 1, 9: 2}[c] for c in classes.tolist()])
    assert float(episodes_miou(counts[:, 1], index, 3)) == pytest.approx(meter.miou)
    with pytest.raises(EpisodeShapeError, match="keep_episodes=True"):
        FewShotMeter([1]).kept_episodes()


def test_the_bootstrap_interval_holds_the_estimate_and_vanishes_when_episodes_agree():
    from fsslib.metrics import episodes_miou, percentile_interval, resampled_miou

    generator = torch.Generator().manual_seed(1)
    intersection = torch.randint(0, 50, (200,), generator=generator).double()
    counts = torch.stack([intersection, intersection + torch.randint(1, 50, (200,), generator=generator)], dim=1)
    classes = torch.randint(0, 5, (200,), generator=generator)
    low, high = percentile_interval(resampled_miou(counts, classes, 5, 1000, generator))
    assert low < float(episodes_miou(counts, classes, 5)) < high and high - low < 0.2
    same = torch.tensor([[3.0, 4.0]]).repeat(50, 1)
    resampled = resampled_miou(same, torch.zeros(50, dtype=torch.long), 5, 100, generator)
    assert percentile_interval(resampled) == pytest.approx((0.75, 0.75))

import pytest
import torch

from fsslib.metrics import FewShotMeter, intersection_union


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
    maps = torch.rand(3, 2, 8, 8)  # (B, K, h, w) logits
    labels = [torch.randint(0, 2, (16, 16)), torch.randint(0, 2, (20, 12)), torch.randint(0, 2, (16, 16))]
    labels[1][0, :4] = 255
    batched, looped = FewShotMeter([1, 2]), FewShotMeter([1, 2])
    score_at_label_size(batched, maps, labels, [1, 2, 1], lambda up: up.argmax(1))
    for logits, label, class_id in zip(maps, labels, [1, 2, 1]):
        upsampled = F.interpolate(logits[None], size=label.shape, mode="bilinear", align_corners=False)
        looped.update(upsampled.argmax(1)[0], label, class_id)
    assert batched.summary() == looped.summary() and batched.episodes == 3

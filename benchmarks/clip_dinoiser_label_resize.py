"""How much CLIP-DINOiser's mIoU moves with the way its predictions reach the label size (toy tier).

    python benchmarks/clip_dinoiser_label_resize.py [--episodes 1000]  ->  benchmarks/results/clip_dinoiser_label_resize_toy.md

fsslib's protocol (PFENet, HSNet) resizes each method's logits to the label size bilinearly with aligned corners,
then takes the argmax; CLIP-DINOiser's logits are log-probabilities with every vocabulary entry that is not a way
folded into channel 0 (their maximum). The official evaluation (mmseg's ``slide_inference`` and ``resize``) resizes
the window-averaged probabilities of the whole vocabulary without aligned corners, then takes the argmax. Three
scorings of the same predictions on the same episodes:

* ``aligned``: the protocol (``score_resize="aligned"``, fsslib's default);
* ``probabilities``: ``exp`` of the logits without aligned corners (``score_resize="probabilities"``, the paper grid's);
* ``official``: the whole vocabulary's probabilities resized without aligned corners, then the argmax, a pixel going to
  a way when its class wins over the whole vocabulary (recomputed here from the segmenter's window scores).

The toy world's labels are the input's size, so the toy tier is read here as the paper tier reads PASCAL: the query's
short side to 76 (64 x 1.19, as 375 -> 448), windows of 64 at stride 32 (448 / 224 in proportion), the prediction
resized back to the 64 x 64 label. Training-free, the shipped toy CLIP, DINO-distilled heads; 1-way and 2-way 1-shot.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fsslib.blocks.sliding import slide
from fsslib.config import make_config
from fsslib.data.benchmarks import TOY
from fsslib.data.episodes import EpisodeDataset, collate_episodes
from fsslib.engine import open_source
from fsslib.methods import build_method
from fsslib.metrics import FewShotMeter, score_at_label_size
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = (("support images (the paper)", "clip-dinoiser-support"), ("text (CLIP-DINOiser)", "clip-dinoiser"))
READ_AS_PAPER = dict(resize="short_side", image_size=76, options={"window": 64, "stride": 32})
SCORINGS = ("aligned", "probabilities", "official")


@torch.no_grad()
def scores(method: str, fold: int, ways: int, episodes: int) -> dict[str, float]:
    """mIoU of each scoring (:data:`SCORINGS`) on the same ``episodes`` test episodes of ``fold``."""
    cfg = make_config(method=method, preset="toy", fold=fold, ways=ways, shots=1, progress=False, **READ_AS_PAPER)
    model = build_method(cfg).eval()
    dataset = EpisodeDataset(open_source(cfg, "test"), fold, 1, cfg.image_size, episodes, cfg.seed, mode="test",
                             ways=ways, resize=cfg.resize)
    names = {c: TOY.class_name(c) for c in dataset.classes}
    meters = {scoring: FewShotMeter(dataset.classes, names) for scoring in SCORINGS}
    for index in range(len(dataset)):
        batch = collate_episodes([dataset[index]])
        inputs = batch.inputs(model.reads_image_labels)
        logits = model(inputs)  # (1, 1 + N, H, W): way log-probabilities, the rest folded into channel 0
        for scoring in ("aligned", "probabilities"):
            score_at_label_size(meters[scoring], logits, batch.query_labels, batch.class_ids, lambda up: up.argmax(1),
                                scoring)
        vocabulary, way_index = model.vocabulary(inputs)
        probabilities = slide(lambda crop: model.scores(crop, vocabulary), inputs.query_images, model.window,
                              model.stride)  # (1, 1 + V', H, W): the whole vocabulary, background names merged
        label = batch.query_labels[0]
        resized = F.interpolate(probabilities, size=label.shape, mode="bilinear", align_corners=False)
        winner = resized.argmax(1)  # (1, H, W) over the vocabulary
        channels = way_index - len(model.background_names) + 1  # (1, N): each way's channel
        prediction = torch.zeros_like(winner)
        for way in range(ways):
            prediction[winner == channels[:, way, None, None]] = way + 1
        meters["official"].update(prediction, label[None], batch.class_ids)
    return {scoring: 100 * meter.miou for scoring, meter in meters.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes per fold")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folds = range(TOY.n_folds)
    provenance = run_provenance("cpu")
    lines = ["# CLIP-DINOiser: the label-size resize (toy tier, read as the paper tier reads)", "",
             f"Written by `python benchmarks/clip_dinoiser_label_resize.py --episodes {args.episodes}` (torch "
             f"{provenance['torch']}, commit {provenance['commit']}, CPU, 1 thread). Training-free, 1-shot, "
             f"{args.episodes} test episodes per fold; queries' short side to 76, windows of 64 at stride 32, scored at "
             "the 64 x 64 label. mIoU (%); the differences are against the protocol's `aligned`.", "",
             "| prompts | ways | scoring | " + " | ".join(f"fold {f}" for f in folds) + " | mean | minus aligned |",
             "|---|---|---|" + "---|" * (len(folds) + 2)]
    for label, method in tqdm(PROMPTS, desc="prompts"):
        for ways in (1, 2):
            per_fold = [scores(method, fold, ways, args.episodes) for fold in folds]
            means = {s: sum(r[s] for r in per_fold) / len(per_fold) for s in SCORINGS}
            for scoring in SCORINGS:
                lines.append(f"| {label} | {ways} | {scoring} | " + " | ".join(f"{r[scoring]:.2f}" for r in per_fold)
                             + f" | {means[scoring]:.2f} | {means[scoring] - means['aligned']:+.2f} |")
    out = RESULTS / "clip_dinoiser_label_resize_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"-> {out}")


if __name__ == "__main__":
    main()

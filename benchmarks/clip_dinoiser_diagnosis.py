"""What the toy CLIP-DINOiser predicts, and why its background teacher fails (toy tier).

    python benchmarks/clip_dinoiser_diagnosis.py                      # -> benchmarks/results/clip_dinoiser_diagnosis_toy.md
    python benchmarks/clip_dinoiser_diagnosis.py --dino A.pt B.pt     # also the attention of other toy DINOs

1. **Predictions** (fold 0, 1-way, the first 300 test episodes of the grid ``clip_dinoiser_toy``,
   1 and 5 shots): the share of pixels predicted foreground against the true share, with precision
   and recall of the foreground, for each prompt and the ablations. mIoU alone cannot tell a
   method that misses objects from one that paints the background.
2. **The teacher's attention** (300 held-out toy scenes, ``default_rng([0, 98, index])``, feature
   cells labelled as in the toy DINO's acceptance metrics): for each head of the toy DINO's last
   block, the class token's mean attention on object cells over its mean on background cells
   (> 1: it looks at objects, as DINO's does on ImageNet), and how often FOUND's seed (the least
   attended patch, :func:`fsslib.pretrain.toy_found.background_seed`) lies on the background.
   FOUND rests on both. ``--dino`` adds other toy DINO checkpoints (e.g. the 400-step controls of
   ``benchmarks/README.md``).
3. **Guided pooling** (the same held-out scenes): for each object cell, the share of its pooling
   weights (``A * [A >= gamma]``) that falls on cells of its own class, and the mean number of
   cells it pools, with the learned correlations and with the DINO teacher's; then the text
   CLIP-DINOiser's mIoU (fold 0, 1-way 1-shot, 1000 test episodes) at each gamma: the control for
   "pooling dilutes the small toy objects with background".
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fsslib import evaluate
from fsslib.clip import maskclip_features_and_tap
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, collate_episodes
from fsslib.engine import open_source
from fsslib.methods import build_method
from fsslib.models.vit import TOY_DINO_CHECKPOINT, last_block_taps, load_dino
from fsslib.pretrain.scenes import render_scenes, to_unit_tensor
from fsslib.pretrain.toy_dino.metrics import cell_labels
from fsslib.pretrain.toy_found import background_seed
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = (  # (label, method, variant)
    ("support images (the paper)", "clip-dinoiser-support", ""),
    ("masked support", "clip-dinoiser-support", "masked_support"),
    ("text + support", "clip-dinoiser-support", "text_support"),
    ("support, no background head", "clip-dinoiser-support", "no_background_head"),
    ("support, no pooling", "clip-dinoiser-support", "no_pooling"),
    ("text (CLIP-DINOiser)", "clip-dinoiser", ""),
    ("text, no background head", "clip-dinoiser", "no_background_head"),
    ("text (MaskCLIP)", "maskclip", ""),
)
HELD_OUT_SEED, HELD_OUT_STREAM = 0, 98  # the toy FOUND's held-out scenes


@torch.no_grad()
def prediction_row(label: str, method: str, variant: str, shots: int, episodes: int, batch_size: int = 20) -> str:
    """One table row: predicted and true foreground share, precision and recall (fold 0, 1-way)."""
    cfg = make_config(method=method, variant=variant, preset="toy", fold=0, shots=shots)
    model = build_method(cfg).eval()
    test = EpisodeDataset(open_source(cfg, "test"), 0, shots, cfg.image_size, episodes, cfg.seed)
    predicted = true = hits = pixels = 0
    for start in range(0, episodes, batch_size):
        batch = collate_episodes([test[index] for index in range(start, min(start + batch_size, episodes))])
        foreground = model(batch).argmax(dim=1) == 1  # (B, H, W)
        truth = batch.query_masks == 1
        predicted += int(foreground.sum())
        true += int(truth.sum())
        hits += int((foreground & truth).sum())
        pixels += truth.numel()
    return (f"| {label} | {shots} | {predicted / pixels:.3f} | {true / pixels:.3f} | {hits / max(predicted, 1):.2f} | "
            f"{hits / true:.2f} |")


@torch.no_grad()
def attention_row(checkpoint: Path, images: torch.Tensor, labels: torch.Tensor) -> str:
    """One table row: per-head object / background attention ratio and the seed's placement."""
    torch.manual_seed(0)  # the untrained ("random") DINO's weights
    attention = last_block_taps(load_dino("toy-dino", str(checkpoint)), images).cls_attention  # (N, heads, T)
    objects, background = labels > 0, labels == 0  # (N, T)
    ratios = [float(attention[:, head][objects].mean() / attention[:, head][background].mean())
              for head in range(attention.shape[1])]
    seed = background_seed(attention)  # (N,)
    on_background = float((labels[torch.arange(len(labels)), seed] == 0).float().mean())
    return f"| `{checkpoint.name}` | {' / '.join(f'{r:.2f}' for r in ratios)} | {on_background:.3f} |"


@torch.no_grad()
def pooling_rows(images: torch.Tensor, labels: torch.Tensor, gammas: tuple[float, ...]) -> list[str]:
    """Table rows: own-class share of each object cell's pooling weights and the cells it pools, per gamma."""
    model = build_method(make_config(method="clip-dinoiser", preset="toy")).eval()
    _, tapped = maskclip_features_and_tap(model.bundle, images, model.feature_block)
    correlations = {"learned (correlation head)": model.heads.correlation(tapped),
                    "teacher (toy DINO values)": cosine_correlations(last_block_taps(load_dino("toy-dino"), images).values)}
    same = (labels[:, :, None] == labels[:, None, :]).float()  # (N, T, T)
    anchors = labels > 0  # (N, T)
    rows = []
    for name, correlation in correlations.items():
        for gamma in gammas:
            weights = correlation * (correlation >= gamma)  # (N, T, T)
            own = (weights * same).sum(-1) / weights.sum(-1).clamp(min=1e-6)  # (N, T)
            pooled = (weights > 0).float().sum(-1)  # (N, T)
            rows.append(f"| {name} | {gamma} | {float(own[anchors].mean()):.2f} | {float(pooled[anchors].mean()):.1f} |")
    return rows


def cosine_correlations(tokens: torch.Tensor) -> torch.Tensor:
    """(N, T, C) -> (N, T, T) cosine similarities."""
    unit = F.normalize(tokens.float(), dim=-1)
    return unit @ unit.transpose(1, 2)


def gamma_row(gamma: float, out: Path) -> str:
    """The text CLIP-DINOiser's test mIoU on fold 0 (1-way 1-shot, 1000 episodes) with pooling threshold gamma."""
    cfg = make_config(method="clip-dinoiser", preset="toy", fold=0, shots=1, options={"gamma": gamma},
                      out=str(out / f"gamma{gamma}"))
    return f"| {gamma} | {evaluate.run(cfg)['miou']:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--dino", type=Path, nargs="*", default=[],
                        help="other toy DINO checkpoints to compare ('random': an untrained one)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["# CLIP-DINOiser diagnosis (toy tier)", "",
             f"`python benchmarks/clip_dinoiser_diagnosis.py{' --dino ' + ' '.join(map(str, args.dino)) if args.dino else ''}`; "
             f"{run_provenance('cpu')}.", "",
             f"## Predictions: fold 0, 1-way, the first {args.episodes} test episodes", "",
             "| prompts | shots | predicted foreground share | true share | precision | recall |", "|---|---|---|---|---|---|"]
    for label, method, variant in tqdm(SETTINGS, desc="prompts"):
        lines += [prediction_row(label, method, variant, shots, args.episodes) for shots in (1, 5)]
    scenes = render_scenes(300, HELD_OUT_SEED, HELD_OUT_STREAM)
    images, labels = to_unit_tensor(scenes.images), cell_labels(scenes.masks)
    lines += ["", "## The toy DINO's class-token attention (300 held-out scenes)", "",
              f"Object cells: {float((labels > 0).float().mean()):.3f} of the labelled cells; background "
              f"{float((labels == 0).float().mean()):.3f}. A uniform attention gives ratio 1 and puts the seed on "
              "the background only by chance (`random`: an untrained toy DINO).", "",
              "| toy DINO | object / background attention, per head | seed on background |", "|---|---|---|"]
    lines += [attention_row(path, images, labels) for path in [TOY_DINO_CHECKPOINT, *args.dino]]
    gammas = (0.2, 0.5, 0.7, 0.9)
    lines += ["", "## Guided pooling: what an object cell pools (the same 300 scenes)", "",
              "| correlations | gamma | share of the pooling weight on the cell's own class | cells pooled |",
              "|---|---|---|---|", *pooling_rows(images, labels, gammas), "",
              "Text CLIP-DINOiser, fold 0, 1-way 1-shot, 1000 test episodes (gamma = 0.2 is the paper's):", "",
              "| gamma | mIoU |", "|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        lines += [gamma_row(gamma, Path(scratch)) for gamma in tqdm(gammas, desc="gamma")]
    out = RESULTS / "clip_dinoiser_diagnosis_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

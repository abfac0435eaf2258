"""What the toy CLIP-DINOiser predicts, and why its background teacher fails (toy tier).

    python benchmarks/clip_dinoiser_diagnosis.py                      # -> benchmarks/results/clip_dinoiser_diagnosis_toy.md
    python benchmarks/clip_dinoiser_diagnosis.py --dino A.pt B.pt     # also the attention of other toy DINOs
    python benchmarks/clip_dinoiser_diagnosis.py --adapter best.pt    # also a trained adapter's predictions

1. **Predictions** (fold 0, 1-way, the first 300 test episodes of the grid ``clip_dinoiser_toy``,
   1 and 5 shots): the share of pixels predicted foreground against the true share, with precision
   and recall of the foreground, for each prompt and the ablations. mIoU alone cannot tell a
   method that misses objects from one that paints the background. ``--adapter`` adds the
   trained adapter (a ``best.pt`` of the grid's fold-0 ``trained_adapter`` run).
2. **The teacher's attention** (300 held-out toy scenes, ``default_rng([0, 98, index])``, feature
   cells labelled as in the toy DINO's acceptance metrics): for each head of the toy DINO's last
   block, the class token's mean attention on object cells over its mean on background cells
   (> 1: it looks at objects, as DINO's does on ImageNet), and how often FOUND's seed (the least
   attended patch, :func:`fsslib.pretrain.toy_found.background_seed`) lies on the background.
   FOUND rests on both. ``--dino`` adds other toy DINO checkpoints (e.g. the 3000-step plain control of
   ``benchmarks/README.md``).
3. **Guided pooling** (the same held-out scenes): for each object cell, the share of its pooling
   weights (``A * [A >= gamma]``) that falls on cells of its own class, and the mean number of
   cells it pools, with the learned correlations and with the DINO teacher's; then the text
   CLIP-DINOiser's mIoU (fold 0, 1-way 1-shot, 1000 test episodes) at each gamma: the control for
   "pooling dilutes the small toy objects with background".
4. **What the prompts match** (the episodes of 1.): the cosine of the pooled query features with
   the way's prompt and with the background name, on object cells and on background cells, and the
   share of background cells where the prompt beats the background name (before the background
   rule): why a prompt paints the background or misses the objects, at 1 and 5 shots.
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
from fsslib.engine import load_model
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, episode_batches
from fsslib.engine import open_source
from fsslib.methods import build_method
from fsslib.methods.clip_dinoiser.model import guided_pooling
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
PROMPT_SETTINGS = SETTINGS[:3]  # the support prompts
HELD_OUT_SEED, HELD_OUT_STREAM = 0, 98  # the toy FOUND's held-out scenes


def test_batches(cfg, shots: int, episodes: int, batch_size: int = 20):
    """The first ``episodes`` fold-0 1-way test episodes of the grid, in collated batches."""
    return episode_batches(EpisodeDataset(open_source(cfg, "test"), 0, shots, cfg.image_size, episodes, cfg.seed), batch_size)


@torch.no_grad()
def prediction_row(label: str, method: str, variant: str, shots: int, episodes: int, ckpt: Path | None = None) -> str:
    """One table row: predicted and true foreground share, precision and recall (fold 0, 1-way)."""
    cfg = make_config(method=method, variant=variant, preset="toy", fold=0, shots=shots, ckpt=ckpt and str(ckpt))
    model = load_model(cfg, torch.device("cpu"))
    predicted = true = hits = pixels = 0
    for batch in test_batches(cfg, shots, episodes):
        foreground = model(batch.inputs()).argmax(dim=1) == 1  # (B, H, W)
        truth = batch.query_masks == 1
        predicted += int(foreground.sum())
        true += int(truth.sum())
        hits += int((foreground & truth).sum())
        pixels += truth.numel()
    return (f"| {label} | {shots} | {predicted / pixels:.3f} | {true / pixels:.3f} | {hits / max(predicted, 1):.2f} | "
            f"{hits / true:.2f} |")


@torch.no_grad()
def prompt_row(label: str, variant: str, shots: int, episodes: int) -> str:
    """One table row: cosines of the pooled query features with the way's prompt and the background name
    on object / background cells, and the share of background cells where the prompt wins."""
    cfg = make_config(method="clip-dinoiser-support", variant=variant, preset="toy", fold=0, shots=shots)
    model = build_method(cfg).eval()
    sums = torch.zeros(4)  # cos(prompt) on objects, on background; cos(background name) on objects, on background
    counts, prompt_wins = torch.zeros(2), 0
    for batch in test_batches(cfg, shots, episodes):
        vocabulary, way_index = model.vocabulary(batch)  # (B, V, D), (B, 1)
        dense, tapped = maskclip_features_and_tap(model.bundle, batch.query_images, model.feature_block)
        pooled = F.normalize(guided_pooling(dense, model.heads.correlation(tapped), model.gamma), dim=1)  # (B, D, h, w)
        cosines = torch.einsum("bdhw,bnd->bnhw", pooled, F.normalize(vocabulary, dim=-1))  # (B, V, h, w)
        prompt = cosines.gather(1, way_index[:, :, None, None].expand(-1, -1, *cosines.shape[-2:]))[:, 0]  # (B, h, w)
        background = cosines[:, :len(model.background_names)].amax(dim=1)  # (B, h, w)
        share = [F.interpolate((batch.query_masks == value).float()[:, None], size=pooled.shape[-2:], mode="area")[:, 0]
                 for value in (1, 0)]  # (B, h, w) each
        objects, backdrop = share[0] >= 0.5, share[1] >= 0.99
        sums += torch.stack([prompt[objects].sum(), prompt[backdrop].sum(), background[objects].sum(), background[backdrop].sum()])
        counts += torch.tensor([objects.sum(), backdrop.sum()], dtype=torch.float)
        prompt_wins += int((prompt > background)[backdrop].sum())
    means = sums / counts.repeat(2)
    return (f"| {label} | {shots} | {means[0]:.3f} / {means[1]:.3f} | {means[2]:.3f} / {means[3]:.3f} | "
            f"{prompt_wins / counts[1]:.3f} |")


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
    parser.add_argument("--adapter", type=Path, default=None,
                        help="a trained adapter's best.pt (fold 0, as the grid's trained_adapter run writes it)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["# CLIP-DINOiser diagnosis (toy tier)", "",
             f"`python benchmarks/clip_dinoiser_diagnosis.py{' --dino ' + ' '.join(map(str, args.dino)) if args.dino else ''}"
             f"{f' --adapter {args.adapter}' if args.adapter else ''}`; "
             f"{run_provenance('cpu')}.", "",
             f"## Predictions: fold 0, 1-way, the first {args.episodes} test episodes", "",
             "| prompts | shots | predicted foreground share | true share | precision | recall |", "|---|---|---|---|---|---|"]
    for label, method, variant in tqdm(SETTINGS, desc="prompts"):
        lines += [prediction_row(label, method, variant, shots, args.episodes) for shots in (1, 5)]
    if args.adapter:
        lines += [prediction_row("trained adapter", "clip-dinoiser-support", "trained_adapter", shots, args.episodes,
                                 args.adapter) for shots in (1, 5)]
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
    lines += ["", f"## What the prompts match: fold 0, 1-way, the first {args.episodes} test episodes", "",
              "Cosines with the pooled query features (the scores are softmax(100 cos) over the vocabulary, "
              "whose background entry is the background name).", "",
              "| prompts | shots | cos(prompt): object / background cells | cos(background name): object / background cells "
              "| background cells where the prompt beats the background name |", "|---|---|---|---|---|"]
    for label, _, variant in tqdm(PROMPT_SETTINGS, desc="prompt cosines"):
        lines += [prompt_row(label, variant, shots, args.episodes) for shots in (1, 5)]
    out = RESULTS / "clip_dinoiser_diagnosis_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

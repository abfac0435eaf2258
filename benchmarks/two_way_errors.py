"""PI-CLIP(HDMNet) and HDMNet at 2 ways: where the 2-way errors come from, and what the priors say (toy tier).

    python -m fsslib.runs papermill_runs/piclip_baselines_toy.yaml             # once: the ablation models of fold 0
    python -m fsslib.runs papermill_runs/piclip_hdmnet_two_way_control.yaml    # once: the raw-VVP model
    python benchmarks/two_way_errors.py            # -> benchmarks/results/two_way_errors_toy.md
    python benchmarks/two_way_errors.py --episodes 100 --out /tmp/two_way.md

An N-way episode is answered one way at a time (the one-vs-rest rule of :mod:`fsslib.methods.base`): each way's
binary run gives foreground log-odds, and a pixel goes to the way with the largest positive log-odds. A 2-way
query holds the first way's class and often not the second's. A way whose class is absent should then predict no
foreground; where it does, on the other way's object, it competes with that way for its pixels.

1. **Errors** (the zoo's fold-0 1-shot models and PI-CLIP(HDMNet)'s ablation models of ``piclip_baselines_toy``
   (Tables 3-4: VTP alone, VVP alone, no PIR), the first ``--episodes`` 2-way 1-shot test episodes of
   ``compare_toy``, pixels pooled over the episodes); the 2-way mIoU on those episodes, scored as the protocol does:

   * *found*: the share of a present way's object pixels with positive log-odds in its own run;
   * *taken by the other way*: the share of those pixels whose argmax is the other way;
   * *absent way fires*: when a way's class is absent, the share of the other way's object pixels with positive
     log-odds in the absent way's run.

2. **The priors** (HDMNet and the PI-CLIP(HDMNet) models: they feed their prior maps to ``query_merge``, read there
   by a hook, divided by their x 10 scale). For each binary run, the mean of each prior map over an object: the way's own
   object when its class is present, the other way's object when it is absent. *AUC* is the probability that a
   present run's mean exceeds an absent run's: 0.5 when the prior cannot tell whether the class is in the query.
   HDMNet's maps are raw cosine similarities; PI-CLIP's VTP and VVP are min-max scaled per image (Eqs. 4 and 8),
   so the most similar object reaches 1 whether or not it is of the class.

The ablation models say which prior carries the 2-way loss; the raw-VVP model (the VVP alone without Eq. 8's
min-max scaling, grid ``piclip_hdmnet_two_way_control``) tests whether the scaling does.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, episode_batches
from fsslib.engine import load_model, open_source
from fsslib.errors import FsslibError
from fsslib.metrics import FewShotMeter, score_at_label_size
from fsslib.methods.hdmnet.model import HDMNet
from fsslib.tables import REPO
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = (  # (label, method, variant, options, the grid that trained it; None: the zoo)
    ("PFENet", "pfenet", "", {}, None), ("PI-CLIP(PFENet)", "piclip", "", {}, None),
    ("BAM", "bam", "", {}, None), ("PI-CLIP(BAM)", "piclip-bam", "", {}, None),
    ("HDMNet", "hdmnet", "", {}, None), ("PI-CLIP(HDMNet)", "piclip-hdmnet", "", {}, None),
    ("PI-CLIP(HDMNet), no PIR", "piclip-hdmnet", "no_pir", {}, "piclip_baselines_toy"),
    ("PI-CLIP(HDMNet), VTP alone", "piclip-hdmnet", "vtp", {}, "piclip_baselines_toy"),
    ("PI-CLIP(HDMNet), VVP alone", "piclip-hdmnet", "vvp", {}, "piclip_baselines_toy"),
    ("PI-CLIP(HDMNet), VVP alone, raw", "piclip-hdmnet", "vvp", {"vvp_min_max": False}, "piclip_hdmnet_two_way_control"),
)
OUTPUTS = REPO / "papermill_runs" / "outputs"  # the grids' run folders
FOLD, WAYS, SHOTS, TEST_SEED = 0, 2, 1, 0  # compare_toy's 2-way 1-shot episodes of fold 0


def checkpoint(method: str, variant: str, grid: str | None, outputs: Path) -> str:
    """The zoo's model, or the ``best.pt`` of the grid's fold-0 1-shot run."""
    if grid is None:
        return "zoo"
    path = outputs / grid / f"{method}-{variant}-fold{FOLD}-{SHOTS}shot-seed0" / "best.pt"
    if not path.exists():
        raise FsslibError(f"No {method} model of variant {variant!r} at {path}.",
                          f"make it with python -m fsslib.runs papermill_runs/{grid}.yaml, or point --outputs at the "
                          "folder holding that grid's outputs.")
    return str(path)


def prior_names(model: HDMNet) -> list[str]:
    """The names of the prior channels that ``query_merge`` reads last, in order."""
    guide = model.guide
    if guide is None:
        return ["similarity, embedding", "similarity, layer4"]
    names = [f"VTP{' refined' if 'vtp' in guide.refine else ''}"] * guide.vtp_channels if "vtp" in guide.priors else []
    if "vvp" in guide.priors:
        names += [f"VVP, {'last' if rank == 0 else 'second last'} block" for rank in range(len(guide.vvp_blocks))]
    return names


def prior_scale(model: HDMNet) -> float:
    """What the prior maps are multiplied by before ``query_merge``."""
    return model.guide_scale * (model.guide.prior_scale if model.guide is not None else 1.0)


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive score > a negative score), ties counted half (the Mann-Whitney statistic)."""
    greater = (positive[:, None] > negative[None, :]).float().mean()
    ties = (positive[:, None] == negative[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def measure(method: str, variant: str, options: dict, grid: str | None, episodes: int, outputs: Path) -> dict:
    """The error shares and mIoU of section 1 and, for HDMNet's models, each prior map's object means by presence."""
    cfg = make_config(method=method, variant=variant, options=options, preset="toy", fold=FOLD, shots=SHOTS, ways=WAYS,
                      ckpt=checkpoint(method, variant, grid, outputs), episodes=episodes, seed=TEST_SEED, device="cpu")
    model = load_model(cfg, torch.device("cpu")).eval()
    dataset = EpisodeDataset(open_source(cfg, "test"), FOLD, SHOTS, cfg.image_size, episodes, TEST_SEED, mode="test",
                             ways=WAYS, resize=cfg.resize)
    meter = FewShotMeter(dataset.classes)
    captured: list[torch.Tensor] = []
    hook, names = None, []
    if isinstance(model, HDMNet):
        names, scale = prior_names(model), prior_scale(model)
        hook = model.query_merge.register_forward_pre_hook(
            lambda _module, args: captured.append(args[0][:, -len(names):] / scale))
    counts = dict(present=0, found=0, taken=0, absent_object=0, absent_fires=0)
    object_means: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    with torch.no_grad():
        for batch in tqdm(episode_batches(dataset, 8), desc=method, leave=False):
            captured.clear()
            logits = model(batch.inputs())  # (B, 1+N, H, W)
            score_at_label_size(meter, logits, batch.query_labels, batch.class_ids, lambda up: up.argmax(1))
            log_odds = logits[:, 1:]  # (B, N, H, W): the one-vs-rest rule's log-odds
            masks = batch.query_masks  # (B, H, W) {0, 1..N, 255}
            winner = log_odds.argmax(1)  # (B, H, W)
            for way in range(WAYS):
                other = 1 - way
                own, others = masks == way + 1, masks == other + 1  # (B, H, W)
                absent = ~own.flatten(1).any(1)  # (B,)
                fires = log_odds[:, way] > 0
                counts["present"] += own.sum().item()
                counts["found"] += (own & fires).sum().item()
                counts["taken"] += (own & (winner == other) & (log_odds[:, other] > 0)).sum().item()
                counts["absent_object"] += (others & absent[:, None, None]).sum().item()
                counts["absent_fires"] += (others & absent[:, None, None] & fires).sum().item()
                if captured:
                    priors = captured[0].unflatten(0, (len(batch), WAYS))[:, way]  # (B, P, h, w)
                    region = torch.where(absent[:, None, None], others, own).float()  # the object the run is judged on
                    region = F.interpolate(region[:, None], size=priors.shape[-2:], mode="area")
                    weight = region / region.sum((-2, -1), keepdim=True).clamp_min(1e-9)  # (B, 1, h, w)
                    means = (priors * weight).sum((-2, -1))  # (B, P)
                    has_object = region.flatten(1).sum(1) > 0
                    for present in (True, False):
                        keep = has_object & (absent != present)
                        object_means[present].append(means[keep])
    if hook is not None:
        hook.remove()
    result = {"miou": meter.summary()["miou"], "found": 100 * counts["found"] / counts["present"],
              "taken": 100 * counts["taken"] / counts["present"],
              "absent_fires": 100 * counts["absent_fires"] / max(1, counts["absent_object"])}
    if object_means[True]:
        present, absent = torch.cat(object_means[True]), torch.cat(object_means[False])  # (runs, P)
        distinct: dict[str, int] = {}
        for p, name in enumerate(names):
            distinct.setdefault(name, p)  # the VTP's copies once
        result["priors"] = [(name, present[:, p].mean().item(), absent[:, p].mean().item(),
                             auc(present[:, p], absent[:, p])) for name, p in distinct.items()]
        result["runs"] = (len(present), len(absent))
    return result


def report(results: dict[str, dict], episodes: int) -> str:
    lines = ["# Where the 2-way errors come from (toy tier)", "",
             f"Made by `python benchmarks/two_way_errors.py --episodes {episodes}`: the fold-{FOLD} 1-shot models "
             "(the zoo's; the ablations of `piclip_baselines_toy`; the raw-VVP model of `piclip_hdmnet_two_way_control`), "
             f"the first {episodes} {WAYS}-way {SHOTS}-shot test episodes of `compare_toy` (test seed {TEST_SEED}). "
             "Terms: the script's docstring.", "",
             "## Errors (% of pixels)", "",
             "| model | 2-way mIoU | found | taken by the other way | absent way fires |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {r['miou']:.1f} | {r['found']:.1f} | {r['taken']:.1f} | {r['absent_fires']:.1f} |"
              for label, r in results.items()]
    lines += ["", "## The priors on the object a run is judged on", ""]
    for label, result in results.items():
        if "priors" not in result:
            continue
        runs_present, runs_absent = result["runs"]
        lines += [f"**{label}** ({runs_present} runs with the class present, {runs_absent} absent):", "",
                  "| prior map | mean, class present | mean, class absent | AUC |", "|---|---|---|---|"]
        lines += [f"| {name} | {p:.2f} | {a:.2f} | {u:.2f} |" for name, p, a, u in result["priors"]]
        lines.append("")
    provenance = run_provenance(torch.device("cpu"))
    lines.append(f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=300, help="2-way test episodes of fold 0 (the first ones)")
    parser.add_argument("--out", type=Path, default=RESULTS / "two_way_errors_toy.md", help="the report's path")
    parser.add_argument("--outputs", type=Path, default=OUTPUTS,
                        help="the folder holding the outputs of grids piclip_baselines_toy and piclip_hdmnet_two_way_control")
    args = parser.parse_args()
    results = {label: measure(method, variant, options, grid, args.episodes, args.outputs)
               for label, method, variant, options, grid in MODELS}
    args.out.write_text(report(results, args.episodes))
    print(args.out.read_text())


if __name__ == "__main__":
    main()

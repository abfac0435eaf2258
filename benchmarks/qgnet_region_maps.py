"""QGNet's region maps on the toy tier: Table VII (recall at thresholds) and Sec. IV-C ("opposite region maps").

    python benchmarks/qgnet_region_maps.py    # -> benchmarks/results/qgnet_region_maps_toy.md

Both maps are training-free with the paper's equations (``projection="none"``): the guided region
map is PFENet's prior from the masked support, the prior region map (Eqs. 9-12) compares the
query's bridge features (the frozen toy ResNet) with its prior features (a frozen prior
extractor). So they are measured here for every shipped toy prior extractor
(:data:`fsslib.methods.qgnet.TOY_PRIORS`), every run beside them (``benchmarks/results/qgnet_prior_runs/*.pt``:
other budgets and recipes, the first recipe's extractors, not shipped), an untrained
one, and an oracle: a supervised toy ResNet trained apart from the bridge (another seed, so other
weights and training scenes; it knows the toy classes, kNN mAP about 0.8), which shows what the map's
equations give a prior extractor that has the class information MoCo is meant to learn. Make it with
``python -m fsslib.pretrain toy-resnet --seed 1 --out benchmarks/results/qgnet_oracle_prior/toy_resnet_seed1.pt``.

On fold 0's first ``--episodes`` 1-way 1-shot test episodes (the grids' episodes), with
:func:`fsslib.methods.qgnet.region_map_statistics`:

* **Table VII**: recall ``|[V > alpha] n R_GT| / |R_GT|`` (Eq. 16) at alpha = 0.1 ... 0.9, and,
  beside it, the share of background pixels above alpha (recall alone grows as a map spreads);
* **Sec. IV-C**: the mean map value on object and on background pixels. The paper finds its
  prior region maps *low* on the objects.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, episode_batches
from fsslib.engine import open_source
from fsslib.methods import build_method
from fsslib.methods.qgnet import TOY_PRIORS, region_map_statistics, toy_prior_checkpoint
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES = RESULTS / "qgnet_prior_runs"  # prior-extractor runs that are not shipped (their README)
ORACLE = RESULTS / "qgnet_oracle_prior" / "toy_resnet_seed1.pt"  # a supervised toy ResNet of another seed


def fold0_batches(episodes: int, batch_size: int = 25):
    """Fold 0's first ``episodes`` 1-way 1-shot test episodes, collated."""
    cfg = make_config(method="qgnet", preset="toy", fold=0, shots=1)
    test = EpisodeDataset(open_source(cfg, "test"), 0, 1, cfg.image_size, episodes, cfg.seed)
    return [batch.one_way() for batch in episode_batches(test, batch_size)]


def statistics(extractor: str, batches: list) -> dict[str, dict]:
    """Guided and prior region-map summaries with the prior extractor ``extractor`` (a path or "random")."""
    torch.manual_seed(0)
    model = build_method(make_config(method="qgnet", preset="toy", fold=0, options={"prior_extractor": extractor}))
    return region_map_statistics(model.eval(), batches)


def percent_row(label: str, values: list[float]) -> str:
    return f"| {label} | " + " | ".join(f"{v:.1f}" for v in values) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = fold0_batches(args.episodes)
    shipped = {name: toy_prior_checkpoint(name) for name in TOY_PRIORS if Path(toy_prior_checkpoint(name)).is_file()}
    missing = [name for name in TOY_PRIORS if name not in shipped]
    candidates = {f"{path.stem} (not shipped)": str(path) for path in sorted(CANDIDATES.glob("*.pt"))}
    oracle = {"supervised toy ResNet, seed 1 (oracle)": str(ORACLE)} if ORACLE.is_file() else {}
    results = {name: statistics(path, batches) for name, path in
               tqdm({**shipped, **candidates, "untrained": "random", **oracle}.items(), desc="prior extractors")}
    first = next(iter(results.values()))
    thresholds = first["guided"]["thresholds"]
    lines = ["# QGNet's region maps (toy tier)", "",
             f"`python benchmarks/qgnet_region_maps.py`: fold 0, the first {args.episodes} 1-way 1-shot test "
             f"episodes; bridge = the shipped toy ResNet; {run_provenance('cpu')}."
             + (f" Not shipped yet, so not measured: {', '.join(missing)}." if missing else "")
             + ("" if oracle else f" The oracle ({ORACLE.relative_to(RESULTS.parent.parent)}) is missing: see the script's docstring."), "",
             "## Table VII: recall (%) of the region maps, [V > threshold] on the object pixels (Eq. 16)", "",
             "| map | " + " | ".join(f"{t:.1f}" for t in thresholds) + " |", "|---|" + "---|" * len(thresholds),
             percent_row("guided region map (masked support)", first["guided"]["recall"]),
             *[percent_row(f"prior region map, `{name}`", result["prior"]["recall"]) for name, result in results.items()],
             "", "Share (%) of the *background* pixels above the threshold, the price of that recall:", "",
             "| map | " + " | ".join(f"{t:.1f}" for t in thresholds) + " |", "|---|" + "---|" * len(thresholds),
             percent_row("guided region map (masked support)", first["guided"]["background_share"]),
             *[percent_row(f"prior region map, `{name}`", result["prior"]["background_share"])
               for name, result in results.items()],
             "", "## Sec. IV-C: mean map value on object and on background pixels", "",
             "| map | on objects | on background | objects lower (\"opposite\")? |", "|---|---|---|---|"]
    rows = [("guided region map (masked support)", first["guided"])]
    rows += [(f"prior region map, `{name}`", result["prior"]) for name, result in results.items()]
    for label, summary in rows:
        on_objects, on_background = summary["mean_on_objects"], summary["mean_on_background"]
        lines.append(f"| {label} | {on_objects:.3f} | {on_background:.3f} | {'yes' if on_objects < on_background else 'no'} |")
    out = RESULTS / "qgnet_region_maps_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

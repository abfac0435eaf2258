"""Are the toy prior extractors at their plateau, and what do the recipe's controls change? (toy tier)

    python benchmarks/qgnet_prior_curves.py [--scenes 4000]  ->  benchmarks/results/qgnet_prior_curves_toy.md (+ 2 .png)

Reads the ``.json`` that ``python -m fsslib.pretrain toy-qgnet-prior`` writes beside every checkpoint: the
shipped extractors (``fsslib/checkpoints/toy_qgnet_prior_*.json``) and the runs in
``benchmarks/results/qgnet_prior_runs/``: controls (one setting of the recipe changed, e.g. ``--lr`` or
``--temperature``), other budgets, and the first recipe's extractors (``first_recipe_*``), with their weights. For each run:
its learning curve (held-out kNN mAP and the retrieval of a scene's other view among 500, every
``eval_every`` steps), the first plateau rule (the last quarter of the curve gains less than
``PLATEAU_GAIN``) beside the bootstrap standard error of one curve point (the noise the rule has to beat),
and the losses at the end against chance. Then the second rule: for every pair of runs whose weights are here
and whose settings differ only by a doubled budget, the kNN mAP difference on ``--scenes`` held-out scenes
with its paired bootstrap standard error, also written into both runs' ``.json`` (``plateau.twice_the_budget``
/ ``plateau.half_the_budget``); the same for every pair at one budget whose settings differ in one
setting alone (the controls: lr, temperature, the stride the encoders train at, the precision).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from fsslib.models.backbones import load_toy_resnet  # noqa: E402
from fsslib.pretrain.qgnet_prior.metrics import (HELD_OUT_SEED, HELD_OUT_STREAM, PLATEAU_GAIN,  # noqa: E402
                                                 knn_map, knn_map_difference, last_quarter_gain,
                                                 pooled_features)
from fsslib.pretrain.qgnet_prior.train import PriorSettings  # noqa: E402
from fsslib.pretrain.saving import write_metadata  # noqa: E402
from fsslib.pretrain.scenes import render_scenes  # noqa: E402
from fsslib.pretrain.toy_resnet.model import multi_hot  # noqa: E402
from fsslib.viz import plot_learning_curves  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHIPPED = sorted((ROOT / "fsslib" / "checkpoints").glob("toy_qgnet_prior_*.json"))
UNSHIPPED = sorted((RESULTS / "qgnet_prior_runs").glob("*.json"))


def describe(run: dict) -> str:
    """The run's settings that differ from the shipped recipe's flags (patches, losses, steps, lr, T)."""
    s = run["settings"]
    stride = s.get("train_stride", 8)
    return (f"{s['losses']}, {s['patches']}, {s['steps']} steps, lr {s['lr']}, T {s['temperature']}"
            f"{f', trained at stride {stride}' if stride != 8 else ''}{', bf16' if s.get('precision') == 'bf16' else ''}")


def row(name: str, run: dict) -> str:
    curve = run.get("knn_map_curve") or [[p["step"], p["knn_map"]] for p in run["curve"]]
    gain = last_quarter_gain(curve)
    plateau = run.get("plateau", {})
    se = plateau.get("final_knn_map_se")
    retrieval = [p["view_retrieval"] for p in run["curve"] if "view_retrieval" in p]
    chance = math.log(1 + run["settings"]["queue_size"])
    losses = " / ".join(f"{v['last_steps']:.2f}" for v in run["loss"].values())
    share = run.get("patch_object_share")
    return (f"| `{name}` | {describe(run)} | {curve[-1][1]:.3f}"
            f"{f' ± {se:.3f}' if se is not None else ''} | {run['held_out']['knn_map']['this']:.3f} | "
            f"{gain:+.3f} ({'yes' if gain < PLATEAU_GAIN else 'no'}) | "
            f"{f'{retrieval[-1]:.2f}' if retrieval else 'not recorded'} | {losses} (chance {chance:.2f}) | "
            f"{f'{share:.3f}' if share is not None else '-'} | {run.get('wall_time_minutes', float('nan')):.0f} |")


PREDATED = {"precision": "fp32"}  # what a run that predates a setting trained with, where today's default differs


def recipe(run: dict) -> dict:
    """What a run was trained with but its budget: settings (older runs: what they trained with for the fields they
    predate, :data:`PREDATED`, else today's defaults) and superpixels."""
    settings = {**asdict(PriorSettings()), **PREDATED, **run["settings"], "superpixels": run.get("superpixels")}
    return {k: v for k, v in settings.items() if k not in ("steps", "eval_every", "curve_scenes")}


PATCH_SETTINGS = {"patches", "superpixels", "patch_size", "min_patch_area", "local_queue_size"}  # the local loss's


def settings_apart(first: dict, second: dict) -> list[str]:
    """The settings (budget included) in which two runs differ; the patch settings count only when both runs
    train the local loss (a global-only run never reads them)."""
    a, b = {**recipe(first), "steps": first["settings"]["steps"]}, {**recipe(second), "steps": second["settings"]["steps"]}
    unused = PATCH_SETTINGS if "global" in (a["losses"], b["losses"]) else set()
    return sorted(key for key in {*a, *b} - unused if a.get(key) != b.get(key))


def record_twice_the_budget(weights: dict[str, Path], first: str, second: str, n_scenes: int,
                            knn: tuple[float, float], measured: dict[str, float]) -> None:
    """Write the doubled-budget verdict into both runs' ``.json`` (``plateau.twice_the_budget`` of the shorter run,
    ``plateau.half_the_budget`` of the longer): the second plateau rule, which beats the noise the curve cannot."""
    verdict = {"held_out_scenes": n_scenes, "knn_map": round(knn[0], 4), "knn_map_twice": round(knn[1], 4),
               "difference": round(measured["difference"], 4), "se": round(measured["se"], 4),
               "rule": f"twice the budget moves the kNN mAP by less than {PLATEAU_GAIN}",
               "reached": abs(measured["difference"]) < PLATEAU_GAIN}
    for name, key, other in ((first, "twice_the_budget", second), (second, "half_the_budget", first)):
        record = json.loads(weights[name].with_suffix(".json").read_text())
        record.setdefault("plateau", {})[key] = {"run": other, **verdict}
        write_metadata(weights[name], record)


def paired_comparisons(weights: dict[str, Path], records: dict[str, dict], n_scenes: int) -> list[str]:
    """kNN mAP difference ± paired s.e. on ``n_scenes`` for (run, run at twice its budget) pairs, and for
    (run, control) pairs at the same budget whose recipes differ in one setting (e.g. lr, T, the stride).
    The doubled-budget verdicts go into the runs' ``.json`` too (:func:`record_twice_the_budget`)."""
    def twice(a: str, b: str, apart_too: set[str]) -> bool:
        return ([k for k in settings_apart(records[a], records[b]) if k not in apart_too] == ["steps"]
                and records[b]["settings"]["steps"] == 2 * records[a]["settings"]["steps"])

    doubled = [(a, b) for a in weights for b in weights if twice(a, b, set())]
    # where a run has no doubling in its own precision, one in the other counts: bf16 and float32 measured
    # 0.003 +- 0.003 apart at 6000 steps (the precision control below), under the rule's 0.005
    shorter, longer = {a for a, _ in doubled}, {b for _, b in doubled}
    doubled += [(a, b) for a in weights for b in weights
                if a not in shorter and b not in longer and twice(a, b, {"precision"}) and not twice(a, b, set())]
    controls = [(a, b, apart[0]) for a in weights for b in weights if a < b
                and len(apart := settings_apart(records[a], records[b])) == 1 and apart != ["steps"]]
    if not doubled and not controls:
        return []
    scenes = render_scenes(n_scenes, HELD_OUT_SEED, HELD_OUT_STREAM)
    labels = multi_hot(scenes.masks)
    names = {*sum(doubled, ()), *(name for a, b, _ in controls for name in (a, b))}
    features = {name: pooled_features(load_toy_resnet(weights[name]), scenes.images) for name in names}

    def compared(first: str, second: str) -> tuple[str, tuple[float, float], dict[str, float]]:
        measured = knn_map_difference(features[first], features[second], labels)
        knn = knn_map(features[first], labels), knn_map(features[second], labels)
        return f"{knn[0]:.3f} | {knn[1]:.3f} | {measured['difference']:+.3f} ± {measured['se']:.3f}", knn, measured

    lines = []
    if doubled:
        lines += ["", f"## Twice the budget ({n_scenes} held-out scenes, seed {HELD_OUT_SEED}, stream {HELD_OUT_STREAM})",
                  "", f"A budget is at its plateau when twice the budget moves the kNN mAP by less than {PLATEAU_GAIN} "
                  "(the second rule); ± is the paired bootstrap standard error (the same resampled query scenes "
                  "score both runs).", "", "| run | twice the budget | kNN mAP | kNN mAP at twice the budget | "
                  f"difference ± s.e. | moves less than {PLATEAU_GAIN} |", "|---|---|---|---|---|---|"]
        for first, second in doubled:
            text, knn, measured = compared(first, second)
            record_twice_the_budget({name: weights[name] for name in (first, second)},
                                    first, second, n_scenes, knn, measured)
            precisions = [records[name]["settings"].get("precision", "fp32") for name in (first, second)]
            across = f" ({precisions[0]} -> {precisions[1]})" if precisions[0] != precisions[1] else ""
            lines.append(f"| `{first}` | `{second}`{across} | {text} | "
                         f"{'yes' if abs(measured['difference']) < PLATEAU_GAIN else 'no'} |")
    if controls:
        lines += ["", f"## Controls: one setting changed at the same budget ({n_scenes} held-out scenes)", "",
                  "Each extractor evaluated at output stride 8, as QGNet uses it; ± is the paired bootstrap standard "
                  "error.", "", "| run | control | setting: run / control | kNN mAP | kNN mAP of the control | "
                  "difference ± s.e. |", "|---|---|---|---|---|---|"]
        for first, second, key in controls:
            values = " / ".join(str(recipe(records[name]).get(key)) for name in (first, second))
            lines.append(f"| `{first}` | `{second}` | {key}: {values} | {compared(first, second)[0]} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=4000, help="held-out scenes of the doubled-budget comparison")
    args = parser.parse_args()
    runs = {path.stem.removeprefix("toy_qgnet_prior_"): json.loads(path.read_text()) for path in SHIPPED}
    unshipped = {path.stem: json.loads(path.read_text()) for path in UNSHIPPED}
    header = ["| run | losses, patches, budget, lr, T | kNN mAP, last curve point ± s.e. (500 scenes) | kNN mAP, "
              "1000 held-out scenes | last-quarter gain (plateau) | view retrieval | loss at the end, global / local "
              "| patch object share | wall time (min) |", "|---|---|---|---|---|---|---|---|---|"]
    lines = ["# The toy prior extractors' learning curves (toy tier)", "",
             "Written by `python benchmarks/qgnet_prior_curves.py` from the runs' `.json` files. Plateau: the last "
             f"quarter of the kNN mAP curve gains less than {PLATEAU_GAIN} (the first rule); ± is the bootstrap "
             "standard error of one curve point over its 250 query scenes (the noise the rule has to beat; the "
             "points of one curve share their scenes, so their differences are less noisy). Each run: one seed "
             "(0), one thread; wall times include whatever else ran on the 2-core machine (and any pause), so they do "
             "not compare runs.", "",
             "## Shipped extractors (`fsslib/checkpoints/toy_qgnet_prior_*`)", "", *header,
             *(row(name, run) for name, run in runs.items())]
    if unshipped:
        lines += ["", "## Other budgets, controls and the first recipe (`benchmarks/results/qgnet_prior_runs/`)", "", *header,
                  *(row(name, run) for name, run in unshipped.items())]
    weights = {**{name: path.with_suffix(".pt") for name, path in zip(runs, SHIPPED)},
               **{name: path.with_suffix(".pt") for name, path in zip(unshipped, UNSHIPPED)}}
    lines += paired_comparisons({k: v for k, v in weights.items() if v.is_file()}, {**runs, **unshipped}, args.scenes)
    every = {**runs, **unshipped}
    for metric, label in (("knn_map", "held-out kNN mAP"), ("view_retrieval", "view retrieval among 500")):
        curves = {name: [p for p in run["curve"] if metric in p] for name, run in every.items()}
        figure = plot_learning_curves({k: v for k, v in curves.items() if v}, title=f"toy prior extractors: {label}",
                                      x="step", y=metric, ylabel=label)
        figure.savefig(RESULTS / f"qgnet_prior_curves_toy_{metric.split('_')[0]}.png", dpi=110)
    lines += ["", "Curves: `qgnet_prior_curves_toy_knn.png` (kNN mAP), `qgnet_prior_curves_toy_view.png` "
              "(view retrieval).", ""]
    (RESULTS / "qgnet_prior_curves_toy.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

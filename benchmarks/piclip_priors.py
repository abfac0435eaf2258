"""PI-CLIP prior generation: batched vs a per-episode loop (as the official code's VTP), and prior quality.

    python benchmarks/piclip_priors.py                 # toy tier on CPU (+ ViT-B/16 at 473 on CUDA) -> a report
    python benchmarks/piclip_priors.py --runs 2        # the throughput measured twice, each run a table
    python benchmarks/piclip_priors.py --quality       # prior IoU per fold (toy tier) -> benchmarks/results/piclip_prior_quality_toy.md
    python benchmarks/piclip_priors.py --regions --episodes 1000   # where each prior's mass falls (toy tier, 4 folds)
                                                       # -> benchmarks/results/piclip_prior_regions_toy.md

Throughput counts episodes per second for all of PI-CLIP's priors (VVP, VTP by GradCAM,
PIR refinement); "per-episode" calls the same code once per episode, like the official
``get_img_cam`` loop over the images of a batch. Peak memory: CUDA allocator peak, or the
process's peak resident set size on the CPU (includes the model; a coarse number). The throughput report goes to
``--out`` (default ``benchmarks/results/piclip_priors_toy.md`` without a GPU, ``piclip_priors_<gpu>.md`` with one).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from fsslib.config import make_config
from fsslib.data.episodes import EpisodeBatch, EpisodeDataset, OneWayBatch
from fsslib.engine import open_source
from fsslib.methods import build_method
from fsslib.methods.piclip import prior_mass_by_region, prior_quality
from fsslib.methods.piclip.quality import REGIONS
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(RESULTS.parent))
from timing import add_report_options, command_line, default_report, run_tables, write_report  # noqa: E402


def fabricated_batch(batch_size: int, shots: int, size: int, device: torch.device) -> EpisodeBatch:
    """1-way episodes of random images, a centred square as every mask."""
    masks = torch.zeros(batch_size, 1, shots, size, size, dtype=torch.long)
    masks[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return EpisodeBatch(torch.rand(batch_size, 1, shots, 3, size, size), masks, torch.rand(batch_size, 3, size, size),
                        masks[:, 0, 0].clone(), [], (torch.arange(batch_size) % 5 + 1)[:, None],
                        [["class"]] * batch_size).to(device)


def episode(batch: OneWayBatch, index: int) -> OneWayBatch:
    pick = slice(index, index + 1)
    return replace(batch, support_images=batch.support_images[pick], support_masks=batch.support_masks[pick],
                   query_images=batch.query_images[pick], query_masks=batch.query_masks[pick],
                   class_ids=batch.class_ids[pick], class_names=batch.class_names[pick])


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def throughput(model, batch: OneWayBatch, per_episode: bool, repeats: int, device: torch.device) -> float:
    """Episodes per second of PI-CLIP's ``clip_priors`` over ``repeats`` passes (after one warm-up)."""
    def once() -> None:
        if per_episode:
            for index in range(len(batch)):
                model.prior.clip_priors(episode(batch, index))
        else:
            model.prior.clip_priors(batch)

    once()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return repeats * len(batch) / (time.perf_counter() - start)


def benchmark(preset: str, batch_size: int, shots: int, repeats: int, device: torch.device) -> dict[str, float]:
    options = {"clip_pretrained": None} if preset == "paper" else {}
    cfg = make_config(method="piclip", preset=preset, shots=shots, backbone_weights="random", options=options)
    model = build_method(cfg).to(device).eval()
    batch = fabricated_batch(batch_size, shots, cfg.image_size, device).one_way()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batched = throughput(model, batch, per_episode=False, repeats=repeats, device=device)
    memory = peak_memory_mb(device)
    looped = throughput(model, batch, per_episode=True, repeats=repeats, device=device)
    return {"batched_eps": batched, "per_episode_eps": looped, "speedup": batched / looped, "peak_mb": memory}


def write_regions(n_episodes: int, shots: int) -> None:
    """Each prior's mean value per region of the query, over the test episodes of the 4 toy folds
    (:func:`fsslib.methods.piclip.prior_mass_by_region`), weighted by each fold's episode count per region."""
    per_fold = []
    for fold in range(4):
        cfg = make_config(method="piclip", fold=fold, shots=shots)
        episodes = EpisodeDataset(open_source(cfg, "test"), fold, shots, cfg.image_size, n_episodes, cfg.seed)
        per_fold.append(prior_mass_by_region(build_method(cfg), episodes))
    counts = {r: sum(f["episodes"][r] for f in per_fold) for r in REGIONS}
    lines = [f"Mean prior value (0-1) per region of the query, toy tier, {shots}-shot, the 1000-episode test sets of "
             f"the 4 folds ({n_episodes} per fold; `python benchmarks/piclip_priors.py --regions --episodes {n_episodes}`). "
             "A region's value averages the episodes whose query holds it (their count in the first row); 'same fill' "
             "and 'same shape' are other classes sharing the target's fill or shape.", "",
             "| prior | " + " | ".join(REGIONS) + " |", "|---|" + "---|" * len(REGIONS),
             "| episodes | " + " | ".join(f"{counts[r]:.0f}" for r in REGIONS) + " |"]
    names = [name for name in per_fold[0] if name != "episodes" and not name.endswith(" / target")]
    for suffix in ("", " / target"):
        if suffix:
            lines += ["", "The same divided by the prior's mean on the target in the same episodes (1: the prior does not "
                      "tell the region from the target):", "", "| prior | " + " | ".join(REGIONS) + " |",
                      "|---|" + "---|" * len(REGIONS)]
        for name in names:  # fold values weighted by their episode counts (ratios: by their target sums, as one pool)
            key = name + suffix
            values = [sum(f[key][r] * f["episodes"][r] for f in per_fold if f["episodes"][r]) / counts[r] for r in REGIONS] \
                if not suffix else [
                sum(f[name][r] * f["episodes"][r] for f in per_fold if f["episodes"][r])
                / sum(f[name][r] * f["episodes"][r] / f[key][r] for f in per_fold if f["episodes"][r]) for r in REGIONS]
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    provenance = run_provenance("cpu")
    lines += ["", f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu."]
    out = RESULTS / f"piclip_prior_regions_toy{'' if shots == 1 else f'_{shots}shot'}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n-> {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per CPU row (default: 5)")
    parser.add_argument("--cuda-repeats", type=int, default=20, help="timed passes per CUDA row (default: 20)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quality", action="store_true", help="prior IoU per fold instead of throughput")
    parser.add_argument("--regions", action="store_true",
                        help="each prior's mean value on the target, same-fill and same-shape objects, other objects, background")
    parser.add_argument("--episodes", type=int, default=300, help="test episodes per fold for --quality and --regions")
    add_report_options(parser, "benchmarks/results/piclip_priors_toy.md without a GPU, piclip_priors_<the GPU>.md "
                               "with one (the throughput)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.regions:
        write_regions(args.episodes, args.shots)
        return
    if args.quality:
        rows = {}
        for fold in range(4):
            cfg = make_config(method="piclip", fold=fold, shots=args.shots)
            episodes = EpisodeDataset(open_source(cfg, "test"), fold, args.shots, cfg.image_size, args.episodes, cfg.seed)
            rows[fold] = prior_quality(build_method(cfg), episodes)
        lines = [f"Prior IoU (%) at threshold 0.5, toy tier, {args.shots}-shot, {args.episodes} episodes per fold "
                 f"(`python benchmarks/piclip_priors.py --quality`)", "",
                 "| prior | " + " | ".join(f"fold {f}" for f in rows) + " | mean |", "|---|" + "---|" * (len(rows) + 1)]
        for name in rows[0]:
            values = [rows[f][name] for f in rows]
            lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {sum(values) / len(values):.1f} |")
        provenance = run_provenance("cpu")
        lines += ["", f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu."]
        out = RESULTS / f"piclip_prior_quality_toy{'' if args.shots == 1 else f'_{args.shots}shot'}.md"
        out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines) + f"\n-> {out}")
        return
    settings = [("toy", torch.device("cpu"))]
    if torch.cuda.is_available():
        settings += [("toy", torch.device("cuda")), ("paper", torch.device("cuda"))]

    def rows() -> Iterator[list[str]]:
        for preset, device in settings:
            repeats = args.cuda_repeats if device.type == "cuda" else args.repeats
            result = benchmark(preset, args.batch_size, args.shots, repeats, device)
            yield ["toy-vit @ 64" if preset == "toy" else "ViT-B/16 @ 473", device.type, str(args.batch_size),
                   str(args.shots), f"{result['batched_eps']:.1f}", f"{result['per_episode_eps']:.1f}",
                   f"{result['speedup']:.1f}x", f"{result['peak_mb']:.0f}"]

    cuda = torch.cuda.is_available()
    lines = ["# PI-CLIP's priors, batched against a per-episode loop", "",
             f"Made by `{command_line(__file__, argv)}`, {args.threads} torch thread"
             f"{'s' if args.threads > 1 else ''} on the CPU. Episodes per "
             f"second of all PI-CLIP's priors (VVP, VTP, PIR): {args.repeats} timed passes per CPU row"
             + (f", {args.cuda_repeats} per CUDA row" if cuda else "") + "; peak MB as the module docstring says.", ""]
    lines += run_tables(args.runs, ["setting", "device", "batch", "shots", "batched ep/s", "per-episode ep/s",
                                    "speed-up", "peak MB"], rows)
    device = "cuda" if cuda else "cpu"
    write_report(lines, args.out or default_report("piclip_priors", device, on_cpu="toy"), device=device, echo=False)


if __name__ == "__main__":
    main()

"""The GPU speed levers of a training step (``fsslib.speed``), each alone and all together, against today's step.

    python benchmarks/gpu_speed.py                 # on an H100 / H200: PFENet, PI-CLIP, BAM, HDMNet, ~8 minutes
    python benchmarks/gpu_speed.py --methods hdmnet --levers fused_attention all
    python benchmarks/gpu_speed.py --device cpu --image-size 65 --steps 1 --warmup 0   # a smoke run

Each method at its paper preset (random weights, as ``benchmarks/paper_train_step.py`` builds them; batch 4,
1-shot, bf16 autocast), one fabricated batch. Rows (levers), each on a fresh copy of the same model:

* ``today``: the reference, ``paper_train_step.py``'s step (the batch on the GPU already, nothing read back);
* ``trainer``: today's ``fsslib.train`` loop before this change: the batch copied from pageable memory every
  step and ``loss.item()`` read every step (two waits for the GPU per step);
* ``no_syncs``: the loop now: the batch copied from pinned memory without waiting, the losses kept on the GPU;
* ``fp32``: today's step without autocast. Its outputs' distance to today's is the scale of bf16 rounding, against
  which the other rows' distances read; its share of peak is of the dense TF32 peak (cuDNN's convolutions run on
  TF32 tensor cores by default; the fp32 peak where torch forbids TF32: ``paper_train_step.peak_tflops``);
* ``channels_last``, ``fused_attention`` (HDMNet only), ``compile``: one setting of :mod:`fsslib.speed` alone;
* ``compile_graphs``: ``compile`` with ``mode="reduce-overhead"``: each compiled region replayed as a CUDA graph
  (one launch for its kernels), ``torch.compiler.cudagraph_mark_step_begin()`` before each step;
* ``all``: the ``no_syncs`` loop with every setting;
* ``today_end``: today's step timed again after every other row, on the same model copy as ``today``'s.

A GPU's clocks and a first row's caches make the first timed row slow: on CUDA the run first keeps the GPU busy
with matrix products (``--gpu-warmup-s``), and each row's ratio is to the mean of ``today`` and ``today_end``,
whose spread the table prints as the reference's drift (a control for the order of the rows).

The syncs removed inside the models (BAM / HDMNet's base-class lookup, PI-CLIP's prompt table) are in every row.
Each row reports ms / step, its ratio to ``today`` (the goal: 0.5 or less), TFLOP / step (``today``'s: every lever
computes the same products) and the share of the GPU's dense bf16 peak. Before its timed steps each row's model
gives its eval-mode outputs for the batch, compared with ``today``'s (relative L2 difference, at most
``--tolerance`` or twice the ``fp32`` row's, whichever is larger: bf16 rounding); the ``compile`` and
``compile_graphs`` rows check theirs with ``--check-compiled`` only (it compiles their eval graphs too, and
evaluates three times, so that a CUDA graph is replayed; without it the ``all`` row checks the compiled path). Rows
run in the order of their cost, every method's eager rows first, then ``all``, then ``compile_graphs`` (whose
kernels the ``all`` row's compile has cached), then ``compile``, then ``today_end``; a row whose estimate would pass
``--budget-s`` is skipped and said so. The plan and its estimate are printed first. A row that raises (a compiler
error, memory) is kept as a failed row and the run goes on. ``--profile`` then profiles a few of each method's
default steps (``torch.profiler``): the share of the step's wall time the GPU is busy (a low share: the step waits
for the host, its Python and its reads from the GPU, which compiling and CUDA graphs address), the host-device
synchronisations, and the ops that take the most GPU time. Writes the Markdown report (``--out``, default
``benchmarks/results/gpu_speed_<gpu>.md``, printed only on the CPU): the setting, the plan, the table, the notes and
profiles, failed rows included. Then it exits with an error naming the rows that failed, whose outputs differ or
whose losses are not finite.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import paper_train_step as base
from timing import add_report_options, command_line, default_report, write_report
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeBatch
from fsslib.device import autocast
from fsslib.methods import build_method
from fsslib.speed import apply_speed_settings, fused_attention
from fsslib.train import make_optimizer

METHODS = ("pfenet", "piclip", "bam", "hdmnet")
LEVERS = ("today", "fp32", "trainer", "no_syncs", "channels_last", "fused_attention", "compile", "compile_graphs", "all",
          "today_end")
EAGER_LEVERS = ("today", "fp32", "trainer", "no_syncs", "channels_last", "fused_attention")
TODAY_MS = {"pfenet": 24.9, "piclip": 53.1, "hdmnet": 59.3, "bam": 24.1}  # H200, bf16, before this change
BUILD_S = 15.0  # building a paper model with random weights (ResNet-50's BatchNorm calibration; PI-CLIP's ViT)
ROW_OVERHEAD_S = 3.0  # copying the model, the output check
COMPILE_S = 75.0  # compiling a method's regions (forward and backward; ``all``: the eval graphs too), a guess
COMPILED_LEVERS = ("compile", "compile_graphs", "all")
CHECKED_ON_ASK = ("compile", "compile_graphs")  # levers whose outputs are checked with --check-compiled only
EVAL_CALLS_COMPILED = 3  # --check-compiled: CUDA graph trees run a region, then record it, then replay it
ATTENTION_METHODS = ("hdmnet", "piclip-hdmnet")  # the methods with HDMNet's attention (fused_attention's rows)


@dataclass
class Row:
    method: str
    lever: str
    ms: float = float("nan")
    peak_mb: float = float("nan")
    difference: float | None = None  # relative L2 distance of the eval outputs to today's
    finite: bool = True
    note: str = ""


def estimate_s(method: str, lever: str, steps: int, warmup: int, compile_s: float | None = None,
               check_compiled: bool = False) -> float:
    """A row's seconds, from today's H200 step time: its steps, copying and checking, and compiling (``compile_s``,
    by default :data:`COMPILE_S`, a guess; the run replaces it by what its compiled rows took; twice for the
    ``compile`` and ``compile_graphs`` rows with ``check_compiled``, which compiles their eval graphs too)."""
    if lever == "fused_attention" and method not in ATTENTION_METHODS:
        return 0.0
    step_s = TODAY_MS.get(method, 50.0) / 1000 * (steps + warmup + 2)
    compiling = (COMPILE_S if compile_s is None else compile_s) * (
        2 if check_compiled and lever in CHECKED_ON_ASK else 1)
    return step_s + ROW_OVERHEAD_S + (compiling if lever in COMPILED_LEVERS else 0.0)


def settings(lever: str) -> dict[str, bool | str]:
    """The :func:`fsslib.speed.apply_speed_settings` keywords of a row."""
    if lever == "all":
        return {"compile": True, "channels_last": True, "fused": True}
    if lever == "compile_graphs":
        return {"compile": True, "channels_last": False, "fused": False, "compile_mode": "reduce-overhead"}
    return {"compile": lever == "compile", "channels_last": lever == "channels_last", "fused": lever == "fused_attention"}


def warm_up_gpu(device: torch.device, seconds: float) -> None:
    """Keep the GPU busy with bf16 matrix products for ``seconds``, so that its clocks are up before the first row."""
    if device.type != "cuda" or seconds <= 0:
        return
    matrix = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(20):
            matrix = (matrix @ matrix).clamp_(-1, 1)
        torch.cuda.synchronize(device)


def loop_of(lever: str) -> str:
    """How a row's step gets its batch and its loss: ``device`` (today's benchmark), ``trainer`` (the old
    fsslib.train loop) or ``pinned`` (the new one)."""
    return {"trainer": "trainer", "no_syncs": "pinned", "all": "pinned"}.get(lever, "device")


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours, reference = ours.float(), reference.float()
    return float((ours - reference).norm() / reference.norm().clamp_min(1e-12))


def eval_outputs(model: torch.nn.Module, batch: EpisodeBatch, device: torch.device, bf16: bool = True) -> torch.Tensor:
    model.eval()
    with torch.no_grad(), autocast(device, bf16):  # no inference_mode: PI-CLIP's GradCAM needs autograd
        return model(batch.inputs()).float()


def time_row(method: str, lever: str, reference: torch.nn.Module, reference_outputs: torch.Tensor, cfg,
             batch: EpisodeBatch, host_batch: EpisodeBatch, device: torch.device, steps: int, warmup: int,
             check_compiled: bool = False) -> Row:
    """One row: a fresh copy of the reference model with the lever's settings, checked, then timed (the
    ``compile`` and ``compile_graphs`` rows are checked with ``check_compiled`` only)."""
    row = Row(method, lever)
    if lever == "fused_attention" and not fused_attention(reference, False):
        row.note = "n/a: no attention to fuse"
        return row
    model = copy.deepcopy(reference)
    options = settings(lever)
    apply_speed_settings(model, **options)
    bf16 = lever != "fp32"
    if lever not in CHECKED_ON_ASK or check_compiled:  # before any step: today's weights
        # a compiled row evaluates three times, so that its CUDA graphs, recorded after a first run, are replayed too:
        # the largest distance counts
        calls = EVAL_CALLS_COMPILED if lever in CHECKED_ON_ASK else 1
        row.difference = max(relative_difference(eval_outputs(model, batch, device, bf16), reference_outputs)
                             for _ in range(calls))
    optimizer = make_optimizer(cfg, model)
    loop = loop_of(lever)
    pinned = host_batch.pin_memory() if loop == "pinned" and device.type == "cuda" else host_batch
    losses: list[torch.Tensor] = []
    graphs = options.get("compile_mode") == "reduce-overhead"

    def step() -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # this step's graphs may reuse the last step's output buffers
        if loop == "device":
            episodes = batch
        else:
            episodes = (host_batch if loop == "trainer" else pinned).to(device, non_blocking=loop == "pinned")
        with autocast(device, bf16):
            loss = model.loss(episodes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if loop == "trainer":
            losses.append(torch.tensor(loss.item()))  # the old loop's read, every step
        else:  # a copy: a CUDA graph's next replay writes over its outputs, this loss included
            losses.append(loss.detach().clone() if graphs else loss.detach())

    model.train()
    # a compiled row compiles in its first steps; CUDA graph trees run a region eagerly once, then record it
    for _ in range(max(warmup, 3 if graphs else 2 if options["compile"] else 0)):
        step()
    base.synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    base.synchronize(device)
    row.ms = 1000 * (time.perf_counter() - start) / steps
    row.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    row.finite = bool(torch.isfinite(torch.stack([loss.float().cpu() for loss in losses])).all())
    return row  # the row's model and optimiser go with this frame: the caller empties the CUDA cache


def default_step(reference: torch.nn.Module, cfg, batch: EpisodeBatch, device: torch.device) -> Callable[[], None]:
    """Today's bf16 training step on ``batch`` of a copy of ``reference`` in train mode, with its own optimiser (the
    copy keeps the reference's weights untouched)."""
    model = copy.deepcopy(reference).train()
    optimizer = make_optimizer(cfg, model)

    def step() -> None:
        with autocast(device, True):
            loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


SYNC_CALLS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}  # host waits


def profile_step(method: str, reference: torch.nn.Module, cfg, batch: EpisodeBatch, device: torch.device,
                 steps: int = 5, rows: int = 15) -> str:
    """A report of ``steps`` default training steps under ``torch.profiler``: wall time, the GPU's busy time (the sum
    of its kernels' self time: an upper bound where kernels overlap), the synchronising CUDA calls and the top ops."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    step = default_step(reference, cfg, batch, device)
    for _ in range(3):
        step()
    base.synchronize(device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as profiler:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        base.synchronize(device)
        wall_ms = 1000 * (time.perf_counter() - start) / steps
    events = profiler.key_averages()
    kernels_ms = sum(event.self_device_time_total for event in events  # the kernels' own events, as the table sums
                     if event.device_type == DeviceType.CUDA and not event.is_user_annotation) / 1000 / steps \
        if cuda else float("nan")
    syncs = sum(event.count for event in events if event.key in SYNC_CALLS) / steps
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    return (f"### {method}: {wall_ms:.1f} ms / step under the profiler, GPU kernels {kernels_ms:.1f} ms "
            f"({100 * kernels_ms / wall_ms:.0f}% busy), {syncs:.1f} synchronising CUDA calls / step\n\n"
            + events.table(sort_by=sort_by, row_limit=rows))


def build(method: str, batch_size: int, shots: int, image_size: int | None, device: torch.device, heads: Path):
    """The method's paper model with random weights (seeded), its config, and the FLOPs of one bf16 step."""
    variant, options = base.METHODS[method]
    options = {key: str(heads) if value == "HEADS" else value for key, value in options.items()}
    cfg = make_config(method=method, preset="paper", variant=variant or None, shots=shots, batch_size=batch_size,
                      amp=True, backbone_weights="random", options=options, image_size=image_size)
    torch.manual_seed(0)
    model = build_method(cfg).to(device)
    return cfg, model


def step_flops(model: torch.nn.Module, cfg, batch: EpisodeBatch, device: torch.device) -> float:
    """FLOPs of one default training step of ``model``."""
    return base.step_flops(default_step(model, cfg, batch, device))


def ordered_plan(methods: list[str], levers: list[str]) -> list[tuple[str, str]]:
    """Every method's eager rows first, then the ``all`` rows, then ``compile_graphs`` and ``compile`` alone (the most
    costly), then ``today_end`` where any lever ran beside ``today``."""
    rows = [(m, lever) for m in methods for lever in levers if lever in EAGER_LEVERS]
    rows += [(m, "all") for m in methods if "all" in levers]
    rows += [(m, "compile_graphs") for m in methods if "compile_graphs" in levers]
    rows += [(m, "compile") for m in methods if "compile" in levers]
    if any(lever not in ("today", "today_end") for lever in levers):
        rows += [(m, "today_end") for m in methods]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(base.METHODS))
    parser.add_argument("--levers", nargs="+", default=list(LEVERS[:-1]), choices=LEVERS[:-1],
                        help="rows to run (today, the reference, always runs)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per row (a compiled row: at least 2)")
    parser.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a smoke run)")
    parser.add_argument("--image-size", type=int, default=None, help="replace the paper sizes (a smoke run)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip the rows whose estimate would pass it")
    parser.add_argument("--tolerance", type=float, default=0.03,
                        help="largest relative L2 difference of a row's outputs to today's (bf16 rounding); "
                        "twice the fp32 row's difference where that is larger")
    parser.add_argument("--check-compiled", action="store_true",
                        help="compare the compile and compile_graphs rows' eval outputs with today's too "
                        "(compiles their eval graphs: about a compiled row's time again)")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and its estimate, run nothing")
    parser.add_argument("--profile", action="store_true",
                        help="after the rows, profile each method's default step: GPU busy share, syncs, top ops")
    parser.add_argument("--gpu-warmup-s", type=float, default=8.0,
                        help="seconds of matrix products before the first row (CUDA only), so the clocks are up")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, TFLOP/s, when "
                        "it is not an H100 / H200")
    add_report_options(parser, "benchmarks/results/gpu_speed_<the GPU>.md; printed only on the CPU", runs=None)
    args = parser.parse_args(argv)
    levers = ["today"] + [lever for lever in args.levers if lever != "today"]
    plan = ordered_plan(args.methods, levers)
    estimates = {row: estimate_s(*row, args.steps, args.warmup, check_compiled=args.check_compiled)
                 for row in plan}
    total = sum(estimates.values()) + BUILD_S * len(args.methods)
    plan_text = (f"plan: {len(plan)} rows, estimated {total:.0f} s (compiling {COMPILE_S:.0f} s a compiled row, a guess "
                 f"replaced by the first one's time), budget {args.budget_s:.0f} s: "
                 + ", ".join(f"{m}/{lever}" for m, lever in plan if estimates[(m, lever)] > 0))
    if args.plan_only:
        print(plan_text)
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_speed.py times GPU steps; no CUDA device is available here "
                         "(--device cpu --image-size 65 --steps 1 --warmup 0 runs it as a smoke test).")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = args.peak_tflops or base.peak_tflops(name, "bf16")
    peak_fp32 = base.peak_tflops(name, "fp32")
    report = ["# GPU speed levers of a training step", "",
              f"Made by `{command_line(__file__, argv)}`. GPU speed levers, {name}, torch {torch.__version__}, batch "
              f"{args.batch_size}, {args.shots}-shot, bf16 autocast, {args.steps} timed steps per row after "
              f"{args.warmup}. The module docstring says what each row is.", "", plan_text, ""]
    print("\n".join(report), flush=True)
    warm_up_gpu(device, args.gpu_warmup_s)

    started = time.perf_counter()
    compile_s: float | None = None  # what compiling took in this run's first compiled row
    rows: list[Row] = []
    flops: dict[str, float] = {}
    references: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as folder:
        heads = base.random_heads(Path(folder))
        for method, lever in plan:
            elapsed = time.perf_counter() - started
            if method not in references:
                cfg, model = build(method, args.batch_size, args.shots, args.image_size, device, heads)
                batch_cpu = base.fabricated_batch(args.batch_size, args.shots, cfg.image_size, torch.device("cpu"))
                batch = batch_cpu.to(device)
                references[method] = (cfg, model, eval_outputs(model, batch, device), batch, batch_cpu)
                flops[method] = step_flops(model, cfg, batch, device)
            estimate = estimate_s(method, lever, args.steps, args.warmup, compile_s, args.check_compiled)
            if lever not in ("today", "today_end") and elapsed + estimate > args.budget_s:
                rows.append(Row(method, lever, note=f"skipped: past the {args.budget_s:.0f} s budget"))
                print(f"{method} / {lever}: skipped (budget)", flush=True)
                continue
            cfg, model, outputs, batch, batch_cpu = references[method]
            row_started = time.perf_counter()
            try:
                row = time_row(method, lever, model, outputs, cfg, batch, batch_cpu, device, args.steps, args.warmup,
                               args.check_compiled)
            except Exception as error:  # a lever that breaks (a compiler error, memory) is a result: the run goes on
                traceback.print_exc()
                row = Row(method, lever, note=f"failed: {type(error).__name__}: {str(error)[:160]!r}")
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the row's model copy and optimiser state are gone
            if lever in COMPILED_LEVERS and compile_s is None:
                compile_s = time.perf_counter() - row_started - estimate_s(method, "today", args.steps, args.warmup)
            rows.append(row)
            print(f"{method} / {lever}: {row.ms:.1f} ms/step {row.note}({time.perf_counter() - started:.0f} s so far)",
                  flush=True)

    table = ["| method | lever | ms / step | x today | TFLOP / step | share of peak | peak MB | output diff | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    references_ms: dict[str, list[float]] = {}
    for row in rows:
        if row.lever in ("today", "today_end"):
            references_ms.setdefault(row.method, []).append(row.ms)
    today = {method: sum(times) / len(times) for method, times in references_ms.items()}
    # a lever's outputs may sit from today's as far as two bf16 roundings of the fp32 outputs (where fp32 ran)
    rounding = {row.method: row.difference for row in rows if row.lever == "fp32" and row.difference is not None}
    tolerance = {method: max(args.tolerance, 2 * rounding.get(method, 0.0)) for method in args.methods}
    failed = []
    for row in sorted(rows, key=lambda r: (args.methods.index(r.method), LEVERS.index(r.lever))):
        tflop = flops[row.method] / 1e12
        row_peak = peak_fp32 if row.lever == "fp32" else peak
        share = "n/a" if row_peak is None or row.ms != row.ms else f"{100 * tflop / (row.ms / 1000) / row_peak:.1f}%"
        ratio = row.ms / today[row.method] if row.ms == row.ms else float("nan")
        difference = "-" if row.difference is None else f"{row.difference:.1e}"
        table.append(f"| {row.method} | {row.lever} | {row.ms:.1f} | {ratio:.2f} | {tflop:.3f} | {share} | "
                     f"{row.peak_mb:.0f} | {difference} | {row.note} |")
        if row.lever != "fp32" and row.difference is not None and not row.difference <= tolerance[row.method]:
            failed.append(f"{row.method}/{row.lever} (outputs differ by {row.difference:.1e}, more than "
                          f"{tolerance[row.method]:.1e})")
        if row.note.startswith("failed"):
            failed.append(f"{row.method}/{row.lever} ({row.note})")
        if not row.finite:
            failed.append(f"{row.method}/{row.lever} (losses not finite)")
    notes = [f"{method}: fp32 outputs {distance:.1e} from today's bf16 ones; a lever's may differ by up to "
             f"{tolerance[method]:.1e}." for method, distance in rounding.items()]
    notes += [f"{method}: today's step {times[0]:.1f} ms first, {times[1]:.1f} ms last (drift "
              f"{100 * (times[1] / times[0] - 1):+.0f}%; ratios are to their mean)."
              for method, times in references_ms.items() if len(times) == 2]
    print("\n" + "\n".join(table) + "\n\n" + "\n\n".join(notes), flush=True)
    report += [*table, "", *(line for note in notes for line in (note, ""))]
    if args.profile:
        for method, (cfg, model, _, batch, _) in references.items():
            try:
                profile = profile_step(method, model, cfg, batch, device)
            except Exception as error:  # the profiler may be unavailable: the measured rows are kept all the same
                traceback.print_exc()
                profile = f"### {method}: not profiled ({type(error).__name__}: {str(error)[:160]!r})"
            print("\n" + profile, flush=True)
            report += [profile, ""]
    failing = f" Rows that fail their check: {', '.join(failed)}." if failed else ""
    report.append(f"Total {time.perf_counter() - started:.0f} s.{failing}")
    write_report(report, args.out or default_report("gpu_speed", args.device), device=args.device, echo=False)
    if failed:
        raise SystemExit(f"rows that fail their check: {', '.join(failed)}")


if __name__ == "__main__":
    main()

"""fsslib's PFENet against dvlab-research/PFENet's own model: training-step and evaluation time as a ratio.

    python benchmarks/official_speed.py --official /path/to/PFENet                       # CUDA, 473 x 473
    python benchmarks/official_speed.py --official /path/to/PFENet --device cpu --batch-size 2 --steps 10
    python benchmarks/official_speed.py --official /path/to/PFENet --device cpu --image-size 97 --steps 2   # smoke

``--official`` is a local checkout of https://github.com/dvlab-research/PFENet; nothing of it is copied
into fsslib. Its ``model/PFENet.py`` is imported unmodified (on a machine without CUDA, ``Tensor.cuda`` is
made a no-op while it is imported: the file builds CUDA tensors as default arguments) and built as its
``train.py`` builds it: ResNet-50 (PSPNet's deep stem, ``pretrained=False``: random weights), PPM scales
60 / 30 / 15 / 8, the backbone frozen, SGD over the nine head modules, loss = main + 1.0 x auxiliary.
fsslib's side is ``--method pfenet --preset paper`` with random weights, whose frozen deep-stem backbone
is calibrated (:func:`fsslib.models.backbones.calibrate_batch_norm`); the official model gets the same
backbone weights and BatchNorm statistics, so both compute from one backbone. The batch is
``paper_train_step.fabricated_batch`` (1-way episodes, a centred square as every mask).

Steps alternate (official, fsslib, official, ...), each timed alone after a synchronisation; the ratio is
fsslib's time over the official one's, per pair, reported as median and interquartile range. Peak memory is
measured apart (CUDA only). Both in fp32 (the official code trains without AMP) and, with ``--precisions
fp32 bf16``, both under the same bf16 autocast. The report (``--out``, default
``benchmarks/results/official_speed_<gpu>.md``, printed only on the CPU) gives the trainable-parameter counts of
both, the official checkout's commit and the table. ``official_hdmnet_speed.py`` compares HDMNet so, with this
file's helpers (:func:`arguments`, :func:`compare`, :func:`report`).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from fsslib.config import make_config
from fsslib.device import autocast
from fsslib.speed import apply_speed_settings
from fsslib.methods import build_method
from fsslib.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from fsslib.train import make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from paper_train_step import fabricated_batch, synchronize  # noqa: E402
from timing import add_report_options, command_line, default_report, write_report  # noqa: E402

STEM = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6", "bn3": "7"}  # official layer0's indices
HEAD_MODULES = ("down_query", "down_supp", "init_merge", "alpha_conv", "beta_conv", "inner_cls", "res1", "res2", "cls")


def runnable_on_this_machine() -> None:
    """On a machine without CUDA, ``Tensor.cuda`` becomes a no-op (``model/PFENet.py`` calls it in default
    arguments and in its forward); where OpenCV is missing, an empty ``cv2`` (the file imports it, never calls it)."""
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    if importlib.util.find_spec("cv2") is None:
        sys.modules.setdefault("cv2", types.ModuleType("cv2"))


def official_pfenet(checkout: Path, shots: int) -> nn.Module:
    """The official PFENet of ``checkout`` (ResNet-50, random weights), its backbone frozen as ``train.py`` does."""
    if not (checkout / "model" / "PFENet.py").is_file():
        raise SystemExit(f"{checkout} is not a checkout of dvlab-research/PFENet (no model/PFENet.py); clone it with "
                         "git clone https://github.com/dvlab-research/PFENet and pass its folder to --official.")
    sys.path.insert(0, str(checkout))
    runnable_on_this_machine()
    with contextlib.redirect_stdout(None):
        from model.PFENet import PFENet  # noqa: PLC0415 -- the checkout is only known at run time
        model = PFENet(layers=50, classes=2, zoom_factor=8, criterion=nn.CrossEntropyLoss(ignore_index=255),
                       BatchNorm=nn.BatchNorm2d, pretrained=False, shot=shots, ppm_scales=[60, 30, 15, 8], vgg=False)
    for layer in (model.layer0, model.layer1, model.layer2, model.layer3, model.layer4):
        layer.requires_grad_(False)
    return model


def official_backbone_state(fsslib_backbone: nn.Module) -> dict[str, torch.Tensor]:
    """fsslib's deep-stem backbone in the official names: ``layer0`` (the stem's Sequential) .. ``layer4``."""
    state = {}
    for key, value in fsslib_backbone.state_dict().items():
        if key.startswith("stem."):
            module, rest = key[len("stem."):].split(".", 1)
            state[f"layer0.{STEM[module]}.{rest}"] = value
        else:
            state[key] = value
    return state


def share_backbone(official: nn.Module, fsslib_backbone: nn.Module) -> None:
    """Load fsslib's (calibrated) deep-stem backbone into the official ``layer0`` .. ``layer4``."""
    missing, unexpected = official.load_state_dict(official_backbone_state(fsslib_backbone), strict=False)
    if unexpected or any(key.startswith(("layer0", "layer1", "layer2", "layer3", "layer4")) for key in missing):
        raise SystemExit(f"the backbones do not correspond: missing {missing[:4]}, unexpected {unexpected[:4]}")


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def interleaved(steps: dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each step function, calls alternated, each timed alone."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for index in range(warmup + repeats):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def peak_mb(step: Callable[[], None], device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    step()
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(3):
        step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def ratio_text(fsslib_times: list[float], official_times: list[float]) -> str:
    ratios = sorted(f / o for f, o in zip(fsslib_times, official_times))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return f"{statistics.median(ratios):.2f}x (IQR {quartiles[0]:.2f}-{quartiles[2]:.2f}; range {ratios[0]:.2f}-{ratios[-1]:.2f})"


def arguments(description: str, official: str, stem: str) -> argparse.Namespace:
    """The options every comparison takes (``official``: what ``--official`` is a checkout of; ``stem``: the
    report's file name before its machine), checked."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help=f"a local checkout of {official}")
    parser.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu")
    parser.add_argument("--batch-size", type=int, default=4, help="episodes per step (the PASCAL recipes': 4)")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=473, help="input size (the papers' 473)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each model first")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU")
    parser.add_argument("--compile", action="store_true",
                        help="fsslib's side with its --compile setting (fsslib.speed: regional torch.compile)")
    add_report_options(parser, f"benchmarks/results/{stem}_<the GPU>.md; printed only on the CPU", runs=None)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: pass --device cpu.")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def speed_up(ours: nn.Module, args: argparse.Namespace) -> nn.Module:
    """fsslib's model (on its device) with the speed settings the run asks for (``--compile``); the official
    model is left as its code builds it."""
    if args.compile:
        apply_speed_settings(ours, compile=True)
    return ours


def official_normalise(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) images in [0, 1] normalised as the official data pipelines do (ImageNet mean and std)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return (images - mean) / std


def setting(args: argparse.Namespace, device: torch.device) -> str:
    """The run's setting, for the report's first lines: the batch, the device, the timed steps and which
    commit of the official checkout ran."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    checkout = checkout_commit(Path(args.official))
    return (f"random weights, {args.shots}-shot, batch {args.batch_size}, {args.image_size} x {args.image_size}, "
            f"{name}, torch {torch.__version__}; {args.steps} alternated steps of each after {args.warmup}"
            + ("; fsslib with --compile" if args.compile else "") + f". The official checkout: {checkout}.")


def checkout_commit(folder: Path) -> str:
    """``commit <short hash>`` of ``folder`` where it is a git checkout's own root; else "not a git checkout" (a
    copy of the official folders inside another repository must not report that repository's commit)."""
    def git(*arguments: str) -> str | None:
        found = subprocess.run(["git", "-C", str(folder), *arguments], capture_output=True, text=True)
        return found.stdout.strip() if found.returncode == 0 else None

    root = git("rev-parse", "--show-toplevel")
    if root is None or Path(root).resolve() != folder.resolve():
        return "not a git checkout"
    return f"commit {git('rev-parse', '--short', 'HEAD')}"


def report(title: str, args: argparse.Namespace, stem: str, lines: list[str]) -> None:
    """Write the comparison's report: its title, the command, then ``lines`` (the setting and the table)."""
    write_report([f"# {title}", "", f"Made by `{command_line(stem + '.py', sys.argv[1:])}`.", "", *lines],
                 args.out or default_report(stem, args.device), device=args.device, echo=False)


def compare(ours: nn.Module, official: nn.Module, optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
            losses: tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]],
            evaluations: tuple[Callable[[], object], Callable[[], object]], args: argparse.Namespace,
            device: torch.device, fixed_batchnorm: bool = False) -> list[str]:
    """The trainable-parameter counts and the Markdown table of fsslib (first of each pair) against the
    official model: training steps (``losses``: each model's training loss of the batch, then backward and its
    optimiser's step) and evaluations (forward passes without gradients), in each of ``args.precisions``.
    ``fixed_batchnorm``: the official model's BatchNorms stay in eval mode while training (a ``fix_bn``). Each
    line is printed as it is made."""
    lines = [f"Trainable parameters: fsslib {trainable(ours):,}, official {trainable(official):,}", "",
             "| precision | what | fsslib / official time | fsslib ms | official ms | peak MB fsslib / official |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    recorded = {"fsslib": [], "official": []}

    def training_step(name: str, loss_of: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
                      amp: bool) -> Callable[[], None]:
        def step() -> None:
            with autocast(device, amp):
                loss = loss_of()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            recorded[name].append(loss.detach())
        return step

    def evaluation(forward: Callable[[], object], amp: bool) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad(), autocast(device, amp):
                forward()
        return step

    def set_mode(mode: str) -> None:
        getattr(ours, mode)(), getattr(official, mode)()
        if mode == "train" and fixed_batchnorm:
            official.apply(lambda module: module.eval() if isinstance(module, nn.modules.batchnorm._BatchNorm) else None)

    for precision in args.precisions:
        amp = precision == "bf16"
        label = "bf16 autocast" if amp else "fp32"
        rows = (("training step", "train", training_step("fsslib", losses[0], optimizers[0], amp),
                 training_step("official", losses[1], optimizers[1], amp)),
                ("evaluation", "eval", evaluation(evaluations[0], amp), evaluation(evaluations[1], amp)))
        for what, mode, ours_step, official_step in rows:
            set_mode(mode)
            times = interleaved({"official": official_step, "fsslib": ours_step}, args.steps, args.warmup, device)
            memory = f"{peak_mb(ours_step, device):.0f} / {peak_mb(official_step, device):.0f}"
            lines.append(f"| {label} | {what} | {ratio_text(times['fsslib'], times['official'])} | "
                         f"{1e3 * statistics.median(times['fsslib']):.1f} | "
                         f"{1e3 * statistics.median(times['official']):.1f} | {memory} |")
            print(lines[-1], flush=True)
    diverged = [name for name, values in recorded.items() if not torch.isfinite(torch.stack(values)).all()]
    if diverged:
        raise SystemExit(f"training losses that are not finite in: {', '.join(diverged)} (no report written)")
    return lines


def main() -> None:
    args = arguments(__doc__, "dvlab-research/PFENet", "official_speed")
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = make_config(method="pfenet", preset="paper", shots=args.shots, batch_size=args.batch_size,
                      backbone_weights="random", image_size=args.image_size)
    ours = build_method(cfg)
    official = official_pfenet(args.official, args.shots)
    share_backbone(official, ours.backbone)
    ours, official = speed_up(ours.to(device), args), official.to(device)
    ours_optimizer = make_optimizer(cfg, ours)
    official_optimizer = torch.optim.SGD([{"params": getattr(official, name).parameters()} for name in HEAD_MODULES],
                                         lr=cfg.lr, momentum=0.9, weight_decay=1e-4)
    batch = fabricated_batch(args.batch_size, args.shots, args.image_size, device)
    inputs = SimpleNamespace(x=official_normalise(batch.query_images),
                             s_x=official_normalise(batch.support_images[:, 0]),
                             s_y=batch.support_masks[:, 0].float(), y=batch.query_masks)

    def official_loss() -> torch.Tensor:
        _, main_loss, aux_loss = official(x=inputs.x, s_x=inputs.s_x, s_y=inputs.s_y, y=inputs.y)
        return main_loss + 1.0 * aux_loss

    lines = [f"PFENet, fsslib (--preset paper) against dvlab-research/PFENet, {setting(args, device)}", ""]
    print(lines[0], flush=True)
    lines += compare(ours, official, (ours_optimizer, official_optimizer), (lambda: ours.loss(batch), official_loss),
                     (lambda: ours(batch.inputs()), lambda: official(x=inputs.x, s_x=inputs.s_x, s_y=inputs.s_y)),
                     args, device)
    report("fsslib's PFENet against the official one", args, "official_speed", lines)


if __name__ == "__main__":
    main()

"""The toy DINO's training loop (facebookresearch/dino ``main_dino.py``, scaled to the toy world).

Training images: ``pool_size`` toy scenes from ``np.random.default_rng([seed, 95, index])``, a stream
no split uses; no label is read (DINO's ImageNet images are unlabelled too, and cover every class).
By default they are object-centric (one object cropped to cover about 40% of the image, as
ImageNet's photos are): trained on the plain scenes, where 86% of the cells are background clutter,
the class token attends to the background and FOUND's seed lands on objects
(``benchmarks/results/clip_dinoiser_diagnosis_toy.md``).
Per step: a batch of images, DINO's two global views (64 px) and ``local_views`` local views (32 px)
of each (:mod:`fsslib.pretrain.views`); the teacher sees the global views, the student all of
them; AdamW with DINO's schedules (linear warm-up then cosine for the learning rate, weight decay
0.04 -> 0.4 and teacher momentum 0.996 -> 1 on cosines), each parameter's gradient clipped at norm
3, the last layer of the head frozen for the first ``freeze_last_layer_steps``. The checkpoint holds the
*teacher's* backbone (what DINO releases), fp16.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fsslib.errors import unknown
from fsslib.models.vit import TOY_DINO, VisionTransformer
from fsslib.pretrain.saving import RunRecord, half_precision, save_checkpoint, write_metadata
from fsslib.pretrain.scenes import object_centric_scene, render_scenes, to_unit_tensor
from fsslib.pretrain.schedules import cosine_between, warmup_cosine
from fsslib.pretrain.toy_dino.dino import DinoHead, DinoLoss, teacher_momentum, update_teacher
from fsslib.pretrain.views import DINO_GLOBAL_VIEWS, DINO_LOCAL_VIEW, random_views

CLI = "python -m fsslib.pretrain toy-dino"
TRAIN_STREAM = 95  # training scenes: default_rng([seed, 95, index])
SCENES = ("plain", "object_centric")


@dataclass
class DinoSettings:
    """One toy DINO run (defaults: the recipe of the shipped `toy_dino.pt`)."""

    steps: int = field(default=3000, metadata={"help": "optimiser steps"})
    seed: int = field(default=0, metadata={"help": "scenes, initialisation and views"})
    batch_size: int = field(default=64, metadata={"help": "images per step"})
    pool_size: int = field(default=8000, metadata={"help": "training scenes"})
    local_views: int = field(default=4, metadata={"help": "local views per image (DINO: 8)"})
    global_size: int = field(default=64, metadata={"help": "size of the global views"})
    local_size: int = field(default=32, metadata={"help": "size of the local views"})
    out_dim: int = field(default=1024, metadata={"help": "head output dimension K (DINO: 65536)"})
    lr: float = field(default=2e-3, metadata={"help": "peak AdamW learning rate (DINO: 5e-4 x batch / 256)"})
    min_lr: float = field(default=1e-5, metadata={"help": "learning rate at the end of the cosine"})
    weight_decay: float = field(default=0.04, metadata={"help": "weight decay at the start (DINO: 0.04)"})
    weight_decay_end: float = field(default=0.4, metadata={"help": "weight decay at the end (DINO: 0.4)"})
    warmup_steps: int = field(default=300, metadata={"help": "linear learning-rate warm-up"})
    student_temperature: float = field(default=0.1, metadata={"help": "tau_s"})
    teacher_temperature: float = field(default=0.04, metadata={"help": "tau_t"})
    center_momentum: float = field(default=0.9, metadata={"help": "m of the centre's EMA"})
    teacher_momentum: float = field(default=0.996, metadata={"help": "EMA rate lambda at the start (-> 1)"})
    clip_grad: float = field(default=3.0, metadata={"help": "per-parameter gradient norm clipping (DINO: 3)"})
    freeze_last_layer_steps: int = field(default=100, metadata={"help": "steps with the head's last layer frozen"})
    scenes: str = field(default="object_centric", metadata={
        "help": "training scenes: 'object_centric' (one object cropped to cover about 40%% of the image, as "
                "ImageNet's photos; on 'plain' toy scenes, 1-3 small objects on clutter, the class token learns "
                "to attend to the background and FOUND's premise fails)"})


def training_images(settings: DinoSettings) -> np.ndarray:
    """The unlabelled training scenes (N, H, W, 3) uint8."""
    if settings.scenes not in SCENES:
        raise unknown("toy DINO training scenes", settings.scenes, SCENES)
    size = settings.global_size
    draw = (lambda rng, _: object_centric_scene(rng, size)) if settings.scenes == "object_centric" else None
    return render_scenes(settings.pool_size, settings.seed, TRAIN_STREAM, size, draw=draw).images


def parameter_groups(modules: list[torch.nn.Module]) -> list[dict]:
    """DINO's ``get_params_groups``: weight decay on every parameter but biases and 1-d (norm) parameters."""
    decayed, plain = [], []
    for module in modules:
        for parameter in module.parameters():
            (plain if parameter.ndim <= 1 else decayed).append(parameter)  # biases and norm weights are 1-d
    return [{"params": decayed}, {"params": plain, "weight_decay": 0.0}]


def clip_each_gradient(modules: list[torch.nn.Module], max_norm: float) -> None:
    """DINO's ``clip_gradients``: each parameter's gradient scaled down to norm ``max_norm`` on its own."""
    for module in modules:
        for parameter in module.parameters():
            if parameter.grad is not None:
                norm = parameter.grad.norm()
                parameter.grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))


def dino_step_loss(student: VisionTransformer, student_head: DinoHead, teacher: VisionTransformer,
                   teacher_head: DinoHead, loss: DinoLoss, batch: torch.Tensor, settings: DinoSettings,
                   generator: torch.Generator) -> torch.Tensor:
    """The DINO loss of one batch (B, 3, H, W): views, teacher on the global ones, student on all."""
    global_views = torch.cat([random_views(batch, settings.global_size, generator, views)
                              for views in DINO_GLOBAL_VIEWS])  # (2B, 3, G, G), view-major
    local_views = torch.cat([random_views(batch, settings.local_size, generator, DINO_LOCAL_VIEW)
                             for _ in range(settings.local_views)])  # (L*B, 3, l, l)
    with torch.no_grad():
        teacher_out = teacher_head(teacher(global_views))  # (2B, K)
    student_out = torch.cat([student_head(student(global_views)), student_head(student(local_views))])  # ((2+L)B, K)
    return loss(student_out, teacher_out, views=2 + settings.local_views)


def train_toy_dino(out: str | Path, settings: DinoSettings, progress: bool = True, command: str | None = None,
                   n_eval_images: int = 300) -> dict:
    """Train a toy DINO with ``settings``; write ``out`` (the teacher's backbone) and ``out.json``; return the metadata."""
    from fsslib.pretrain.toy_dino.metrics import acceptance_metrics

    out = Path(out)
    record = RunRecord(command or f"{CLI} --out {out}", settings.seed)
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    images = training_images(settings)
    prepare_seconds = time.perf_counter() - start

    student = VisionTransformer(TOY_DINO)
    student_head = DinoHead(TOY_DINO.width, settings.out_dim)
    teacher, teacher_head = copy.deepcopy(student), copy.deepcopy(student_head)
    teacher.requires_grad_(False), teacher_head.requires_grad_(False)
    loss = DinoLoss(settings.out_dim, settings.student_temperature, settings.teacher_temperature,
                    settings.center_momentum)
    optimizer = torch.optim.AdamW(parameter_groups([student, student_head]), lr=settings.lr)
    history: list[float] = []
    student.train(), teacher.train()
    for step in tqdm(range(settings.steps), desc="pretrain toy DINO", disable=not progress):
        fraction = step / settings.steps
        lr = settings.min_lr + (settings.lr - settings.min_lr) * warmup_cosine(step, fraction, settings.warmup_steps)
        weight_decay = cosine_between(settings.weight_decay, settings.weight_decay_end, fraction)
        optimizer.param_groups[0].update(lr=lr, weight_decay=weight_decay)
        optimizer.param_groups[1].update(lr=lr)
        index = torch.randint(len(images), (settings.batch_size,), generator=generator)
        value = dino_step_loss(student, student_head, teacher, teacher_head, loss,
                               to_unit_tensor(images[index.numpy()]), settings, generator)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        clip_each_gradient([student, student_head], settings.clip_grad)
        if step < settings.freeze_last_layer_steps:
            student_head.last_weight.grad = None
        optimizer.step()
        momentum = teacher_momentum(step, settings.steps, settings.teacher_momentum)
        update_teacher(student, teacher, momentum)
        update_teacher(student_head, teacher_head, momentum)
        history.append(value.item())
    train_seconds = time.perf_counter() - start - prepare_seconds

    save_checkpoint(out, {"backbone": half_precision(teacher.state_dict())})
    window = max(1, min(100, settings.steps // 10))
    metadata = {
        **record.stamp(device="cpu"),
        "model": f"fsslib.models.vit.TOY_DINO = {asdict(TOY_DINO)}: the EMA teacher of DINO self-distillation",
        "task": "toy DINO (stands in for DINO ViT-B/16 and ViT-S/8): self-distillation on unlabelled toy scenes",
        "settings": asdict(settings),
        "training_images": {"count": len(images),
                            "scenes": f"{settings.scenes} scenes of np.random.default_rng([{settings.seed}, {TRAIN_STREAM}, index]), "
                                      f"index < {settings.pool_size}"},
        "loss": {"first_steps": float(np.mean(history[:window])), "last_steps": float(np.mean(history[-window:]))},
        "wall_time_s": {"prepare": round(prepare_seconds, 1), "train": round(train_seconds, 1)},
        "checkpoint": {"file": out.name, "bytes": out.stat().st_size, "dtype": "float16", "keys": ["backbone"]},
        "held_out": acceptance_metrics(out, n_eval_images),  # the fp16 weights as shipped
    }
    write_metadata(out, metadata)
    return metadata

"""DINO's self-distillation parts (facebookresearch/dino ``main_dino.py``: ``DINOHead``, ``DINOLoss``, the EMA).

* **Head**: an MLP (``layers`` linear layers, GELU between, the last to a ``bottleneck``), L2
  normalisation, then a linear layer to ``out_dim`` without bias whose weight rows have norm 1
  (DINO's weight-normalised last layer with its gain frozen at 1, ``norm_last_layer=True``).
* **Loss**: with teacher outputs t on the 2 global views and student outputs s on all V views,
  ``P_t = softmax((t - c) / tau_t)``, ``log P_s = log_softmax(s / tau_s)``;
  ``L = mean over pairs (i global, v != i) of -sum P_t^i log P_s^v`` (tau_s = 0.1, tau_t = 0.04).
  After each step the centre follows the teacher's batch mean: ``c <- m c + (1 - m) mean(t)``, m = 0.9.
* **Teacher**: ``theta_t <- lambda theta_t + (1 - lambda) theta_s``, lambda from 0.996 to 1 on a cosine.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsslib.pretrain.schedules import cosine_between


class DinoHead(nn.Module):
    """MLP -> L2 normalisation -> unit-norm linear layer (no bias) to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 256, bottleneck_dim: int = 64,
                 layers: int = 3) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        modules: list[nn.Module] = []
        for index, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            modules.append(nn.Linear(d_in, d_out))
            if index < layers - 1:
                modules.append(nn.GELU())
        self.mlp = nn.Sequential(*modules)
        self.last_weight = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_weight, std=0.02)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim) logits."""
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_weight, dim=-1))


class DinoLoss(nn.Module):
    """Cross-entropy between centred, sharpened teacher outputs and student outputs on the other views."""

    def __init__(self, out_dim: int, student_temperature: float = 0.1, teacher_temperature: float = 0.04,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temperature, self.teacher_temperature = student_temperature, teacher_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, views: int) -> torch.Tensor:
        """student (V*B, K) over all V views, teacher (2*B, K) over the 2 global views, view-major."""
        student_logp = F.log_softmax(student / self.student_temperature, dim=-1).chunk(views)  # V x (B, K)
        teacher_p = F.softmax((teacher - self.center) / self.teacher_temperature, dim=-1).detach().chunk(2)
        terms = [-(target * student_logp[view]).sum(-1).mean()
                 for index, target in enumerate(teacher_p) for view in range(views) if view != index]
        self.update_center(teacher)
        return torch.stack(terms).mean()

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """c <- m c + (1 - m) (batch mean of the teacher's outputs)."""
        batch_center = teacher.mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


def teacher_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """DINO's EMA rate: from ``base`` at step 0 to 1 at the end, on a cosine."""
    return cosine_between(base, 1.0, step / total_steps)


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """theta_t <- momentum theta_t + (1 - momentum) theta_s, parameter by parameter."""
    for s, t in zip(student.parameters(), teacher.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

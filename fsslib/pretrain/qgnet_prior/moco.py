"""MoCo v2 with QGNet's second queue: the model that pretrains QGNet's prior extractor.

* Global loss (Eq. 1): query encoder ``f_q`` and momentum key encoder ``f_k`` (``m``: MoCo's
  0.999), two aug-plus views of an image are the positive pair, a queue of earlier keys the
  negatives, temperature 0.2 (MoCo v2).
* Local loss (Eq. 6): two views of the same *patch* (a superpixel, :mod:`~fsslib.pretrain.qgnet_prior.patches`)
  are the positive pair; the patch keys have their own queue of ``M`` entries.
* Eq. 7: ``L = L_local + L_global``; :data:`LOSS_SETS` selects Table VI's trained rows (both losses, the global
  one alone) or the local loss alone, which Table VI leaves out.

Each encoder is the backbone's architecture, then global average pooling of layer4 and MoCo
v2's MLP head (C -> C -> ReLU -> 128); features are L2-normalised. The patch embedding reuses
the same encoder and head (the paper names one prior extractor).

*Shuffling BN.* MoCo shuffles the keys across GPUs so that BatchNorm cannot leak which query
and key come from the same image; on one device the keys are encoded in ``key_chunks`` random
sub-batches instead (as MoCo's single-GPU CIFAR demo splits its BatchNorm).

Checked against facebookresearch/moco, ``moco/builder.py`` (queue, momentum update, logits)
and ``main_moco.py`` (aug-plus, MLP head, T = 0.2).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.models.backbones import MultiLevelBackbone
from fsslib.pretrain.losses import info_nce

LOSS_SETS = {"global_local": ("global", "local"), "global": ("global",), "local": ("local",)}


class ContrastiveEncoder(nn.Module):
    """A backbone, global average pooling of layer4 and MoCo v2's MLP head: (B, 3, H, W) -> (B, dim), normalised."""

    def __init__(self, backbone: MultiLevelBackbone, dim: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.channels["layer4"]
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.backbone(images)["layer4"].mean(dim=(2, 3))  # (B, C)
        return F.normalize(self.head(pooled).float(), dim=1)  # float32 under autocast too


class GlobalLocalMoCo(nn.Module):
    """MoCo v2 with a second queue for patches (QGNet Eqs. 1, 6, 7)."""

    def __init__(self, backbone: MultiLevelBackbone, dim: int = 128, queue_size: int = 65536,
                 local_queue_size: int = 65536, momentum: float = 0.999, temperature: float = 0.2,
                 key_chunks: int = 1) -> None:
        super().__init__()
        self.query_encoder = ContrastiveEncoder(backbone, dim)
        self.key_encoder = copy.deepcopy(self.query_encoder).requires_grad_(False)
        self.momentum, self.temperature, self.key_chunks = momentum, temperature, key_chunks
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("local_queue", F.normalize(torch.randn(dim, local_queue_size), dim=0))
        self.register_buffer("pointers", torch.zeros(2, dtype=torch.long))  # next slot of queue, local_queue

    @torch.no_grad()
    def update_key_encoder(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q (MoCo's momentum update), all tensors at once."""
        keys = list(self.key_encoder.parameters())
        torch._foreach_mul_(keys, self.momentum)
        torch._foreach_add_(keys, [query.detach() for query in self.query_encoder.parameters()], alpha=1 - self.momentum)

    @torch.no_grad()
    def keys(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Key embeddings (B, dim) of (B, 3, H, W) views, encoded in ``key_chunks`` shuffled sub-batches."""
        order = torch.randperm(len(images), generator=generator).to(images.device)
        encoded = torch.cat([self.key_encoder(chunk) for chunk in images[order].chunk(self.key_chunks)])
        return encoded[torch.argsort(order)]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, local: bool) -> None:
        """Write ``keys`` (B, dim) over the oldest entries of the image (or patch) queue."""
        queue = self.local_queue if local else self.queue
        pointer = self.pointers[int(local)]  # stays on the queue's device: no wait for the GPU
        slots = (pointer + torch.arange(len(keys), device=keys.device)) % queue.shape[1]
        queue[:, slots] = keys.T
        self.pointers[int(local)] = (pointer + len(keys)) % queue.shape[1]

    def loss(self, query_views: torch.Tensor, key_views: torch.Tensor, local: bool,
             generator: torch.Generator) -> torch.Tensor:
        """InfoNCE of two views (B, 3, H, W) each against the image queue (Eq. 1) or the patch queue (Eq. 6);
        the keys are enqueued afterwards. Call :meth:`update_key_encoder` once per step before the first loss."""
        queries = self.query_encoder(query_views)
        keys = self.keys(key_views, generator)
        with torch.autocast(queries.device.type, enabled=False):  # float32 logits: they are divided by T
            loss = info_nce(queries, keys, (self.local_queue if local else self.queue).clone(), self.temperature)
        self.enqueue(keys, local)
        return loss

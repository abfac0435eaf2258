"""One way to hold frozen pretrained models (a CLIP, a frozen backbone, a teacher) inside a module.

:meth:`HoldsFrozen.hold_frozen` keeps the model as a plain attribute in eval mode without
gradients: it is not a registered submodule, so it stays out of ``parameters()`` (the
optimizer), ``state_dict()`` (checkpoints hold only what was trained) and ``train()``; yet
``.to(device)``, ``.float()`` and friends move it with its holder.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


class HoldsFrozen(nn.Module):
    """Mixin base of modules that hold frozen pretrained models."""

    def __init__(self) -> None:
        super().__init__()
        self._frozen: dict[str, nn.Module] = {}

    def hold_frozen(self, name: str, module: nn.Module) -> nn.Module:
        """Keep ``module`` as attribute ``name``: frozen, in eval mode, not registered."""
        module.eval().requires_grad_(False)
        self._frozen[name] = module
        object.__setattr__(self, name, module)  # bypasses nn.Module's registration of submodules
        return module

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "HoldsFrozen":
        super()._apply(fn, recurse)
        for module in self._frozen.values():  # follow .to(device) / .float() although not registered
            module._apply(fn, recurse)
        return self

"""One way to hold frozen pretrained models (a CLIP, a frozen backbone, a teacher) inside a module.

:meth:`HoldsFrozen.hold_frozen` keeps the model as a plain attribute in eval mode without
gradients: it is not a registered submodule, so it stays out of ``parameters()`` (the
optimizer), ``state_dict()`` (checkpoints hold only what was trained) and ``train()``; yet
``.to(device)``, ``.float()`` and friends move it with its holder.

:func:`frozen_digests` fingerprints every frozen model a module holds: a checkpoint keeps them, so
that it refuses to be loaded beside frozen weights other than the ones it was trained with.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

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


def held_frozen_models(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(dotted name, module) of every frozen model held anywhere inside ``module``, also inside frozen ones."""
    for path, submodule in module.named_modules(prefix=prefix):
        for name, frozen in getattr(submodule, "_frozen", {}).items():
            held = f"{path}.{name}" if path else name
            yield held, frozen
            yield from held_frozen_models(frozen, held)


def frozen_digests(module: nn.Module) -> dict[str, str]:
    """SHA-256 of the parameters and buffers of each frozen model held inside ``module``, by dotted name
    (a model held twice, e.g. one CLIP shared by two blocks, is listed under its first name)."""
    digests, seen = {}, set()
    for name, frozen in held_frozen_models(module):
        if id(frozen) in seen:
            continue
        seen.add(id(frozen))
        digest = hashlib.sha256()
        for key, tensor in sorted(frozen.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        digests[name] = digest.hexdigest()
    return digests

"""Shared fixtures: one generated toy world per test session and tiny configs (environment: ../conftest.py)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def budget(request):
    """A test marked ``@pytest.mark.budget(seconds)`` (or in a module with ``pytestmark = pytest.mark.budget(...)``)
    that runs longer is listed after the run ("tests over their time budget", ../conftest.py); it does not fail:
    a busy machine is no defect. A hang still fails, at ten times the budget (pytest-timeout, ../conftest.py)."""
    marker = request.node.get_closest_marker("budget")
    start = time.perf_counter()
    yield
    if marker is not None:
        elapsed = time.perf_counter() - start
        if elapsed > marker.args[0]:
            request.node.user_properties.append(("over_budget", (elapsed, marker.args[0])))


@pytest.fixture(scope="session")
def toy_root() -> Path:
    """The toy world, generated once (deterministic, so a cached copy is reused)."""
    from fsslib.data.benchmarks import TOY
    from fsslib.data.prepare import ensure_toyworld

    return ensure_toyworld(TOY.root())


@pytest.fixture
def tiny_cfg(tmp_path, toy_root):
    """A factory of tiny toy-tier configs writing into tmp_path."""
    from fsslib.config import make_config

    def factory(**overrides):
        values = dict(smoke=True, progress=False, out=str(tmp_path / "run"))
        values.update(overrides)
        return make_config(**values)

    return factory


@pytest.fixture(scope="session")
def random_backbone():
    """``random_backbone(name)``: the paper tier's backbone ``name`` with random weights, built once per session on
    first use (about a second each)."""
    from functools import cache

    from fsslib.models.backbones import build_backbone

    return cache(lambda name: build_backbone(name, "random"))


@pytest.fixture(scope="session")
def random_resnet50(random_backbone):
    """torchvision's ResNet-50 with random weights (MoCo's architecture)."""
    return random_backbone("resnet50")


@pytest.fixture(scope="session")
def random_vit_b16():
    """open_clip ViT-B/16 with random weights (no download), built once per session."""
    from fsslib.clip import load_clip

    return load_clip("ViT-B-16")


@pytest.fixture(scope="session")
def random_rn50_clip():
    """open_clip RN50 (the modified ResNet LFSS's MaskCLIP uses) with random weights, built once per session."""
    from fsslib.clip import load_clip

    return load_clip("RN50")


@pytest.fixture
def paper_models(monkeypatch, random_backbone, random_vit_b16, random_rn50_clip):
    """Make the methods' ``build`` use the session's random paper-size models instead of building new ones."""
    import fsslib.methods.lfss as lfss
    import fsslib.methods.pfenet as pfenet
    import fsslib.methods.piclip as piclip
    import fsslib.methods.qgnet as qgnet

    for module in (pfenet, piclip, lfss, qgnet):
        monkeypatch.setattr(module, "build_backbone", lambda name, weights=None: random_backbone(name))
    monkeypatch.setattr(piclip, "load_clip", lambda name, pretrained=None, checkpoint=None: random_vit_b16)
    monkeypatch.setattr(lfss, "load_clip", lambda name, pretrained=None, checkpoint=None: random_rn50_clip)

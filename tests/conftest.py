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


@pytest.fixture
def one_torch_thread():
    """One torch thread during a test (bit-exact comparisons), the count restored after: a module uses it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``, never by setting the session's count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture
def run_main(capsys):
    """``run_main(module, *arguments)``: ``python -m module arguments`` as ``module.main(arguments)`` in this process;
    its printed output, or the test fails with the command's message."""
    import importlib

    def run(module: str, *arguments: str) -> str:
        capsys.readouterr()
        try:
            importlib.import_module(module).main(list(arguments))
        except SystemExit as stopped:
            pytest.fail(f"python -m {module} {' '.join(arguments)} exited {stopped.code}: {capsys.readouterr().err[-3000:]}")
        return capsys.readouterr().out

    return run


@pytest.fixture(scope="session")
def random_backbone():
    """``random_backbone(name)``: the paper tier's backbone ``name`` with random weights, built once per session on
    first use (about a second each; its draws leave torch's generator as they found it, so a test's seeded draws
    are the same whether this build or a cached one came first)."""
    from functools import cache

    from fsslib.models.backbones import build_backbone

    return cache(lambda name: _unseeded(build_backbone, name, "random"))


def _unseeded(build, *args):
    """``build(*args)`` with torch's generator restored afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        return build(*args)


@pytest.fixture(scope="session")
def random_resnet50(random_backbone):
    """torchvision's ResNet-50 with random weights (MoCo's architecture)."""
    return random_backbone("resnet50")


@pytest.fixture(scope="session")
def random_clip():
    """``random_clip(name)``: the open_clip model ``name`` with random weights (no download), built once per session
    on first use (one to three seconds each; torch's generator restored afterwards, as for ``random_backbone``)."""
    from functools import cache

    from fsslib.clip import load_clip

    return cache(lambda name: _unseeded(load_clip, name))


@pytest.fixture(scope="session")
def random_vit_b16(random_clip):
    """open_clip ViT-B/16 with random weights (no download), built once per session."""
    return random_clip("ViT-B-16")


@pytest.fixture(scope="session")
def random_rn50_clip(random_clip):
    """open_clip RN50 (the modified ResNet LFSS's MaskCLIP uses) with random weights, built once per session."""
    return random_clip("RN50")


PAPER_BACKBONES = ("resnet50-deepstem", "resnet50")  # random builds draw and calibrate a ResNet-50 (about a second)
PAPER_CLIPS = ("ViT-B-16", "RN50")  # random builds draw 100-150 M weights (one to three seconds)


@pytest.fixture
def random_builds_once(monkeypatch, random_backbone, random_clip):
    """Every build of a paper-tier model with random weights in this process (``backbone_weights=random``, a CLIP
    without ``clip_pretrained``), through the methods' own ``build`` as the command line and the grids call it, takes
    a copy of the session's random ResNet-50 of that name and the session's random CLIP (frozen in every method, as
    :func:`paper_models` shares it) instead of drawing new ones: training and then evaluating a run builds its model
    twice, each time about as long as the rest of a reduced-size run. Builds from weight files go through as before."""
    import copy

    import fsslib.methods.clip_dinoiser as clip_dinoiser
    import fsslib.methods.lfss as lfss
    import fsslib.methods.maskclip as maskclip
    import fsslib.methods.pfenet as pfenet
    import fsslib.methods.piclip as piclip
    import fsslib.methods.prototype as prototype
    import fsslib.methods.qgnet as qgnet
    import fsslib.pretrain.base_learner.files as base_learner_files
    from fsslib.clip import load_clip
    from fsslib.models.backbones import build_backbone

    def backbone(name, weights=None):
        if name in PAPER_BACKBONES and weights == "random":
            return copy.deepcopy(random_backbone(name))
        return build_backbone(name, weights)

    def clip(name, pretrained=None, checkpoint=None, device="cpu"):
        if name in PAPER_CLIPS and pretrained is None and checkpoint is None and str(device) == "cpu":
            return random_clip(name)
        return load_clip(name, pretrained, checkpoint, device)

    for module in (lfss, pfenet, piclip, qgnet, prototype, base_learner_files):
        monkeypatch.setattr(module, "build_backbone", backbone)
    for module in (lfss, piclip, clip_dinoiser, maskclip):
        monkeypatch.setattr(module, "load_clip", clip)


@pytest.fixture
def paper_models(monkeypatch, random_backbone, random_clip):
    """Make the methods' ``build`` use the session's random paper-size models instead of building new ones (each on
    first use: a test of PFENet or QGNet builds no CLIP)."""
    import fsslib.methods.lfss as lfss
    import fsslib.methods.pfenet as pfenet
    import fsslib.methods.piclip as piclip
    import fsslib.methods.qgnet as qgnet

    for module in (pfenet, piclip, lfss, qgnet):
        monkeypatch.setattr(module, "build_backbone", lambda name, weights=None: random_backbone(name))
    monkeypatch.setattr(piclip, "load_clip", lambda name, pretrained=None, checkpoint=None: random_clip("ViT-B-16"))
    monkeypatch.setattr(lfss, "load_clip", lambda name, pretrained=None, checkpoint=None: random_clip("RN50"))

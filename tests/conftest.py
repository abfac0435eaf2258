"""Shared fixtures: one generated toy world per test session and tiny configs (environment: ../conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest


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

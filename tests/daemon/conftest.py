"""Fixtures of the daemon tests: the live engine on the shipped model."""
from __future__ import annotations

from pathlib import Path

import pytest

from leadline.daemon.engine import CpuEngine, load_model

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "default"


@pytest.fixture(scope="module")
def engine():
    """A CPU engine on models/default, warmed up (one per test module: a module's tests share its state)."""
    eng = CpuEngine(load_model(SHIPPED))
    eng.warm_up()
    return eng

"""Shared test fixtures.  ``../shared`` (datasets, fixtures) is optional: tests needing it skip with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SYNTHDETECT_SHARED", REPO.parent / "shared")).resolve()


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test with a clear reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared data beside the checkout is absent)")
    return path


@pytest.fixture
def shared_dir() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def cifake_zip() -> Path:
    return shared_path("datasets", "cifake-train-80k.zip")


@pytest.fixture(scope="session")
def wild_dev() -> Path:
    return shared_path("datasets", "wild-dev")


@pytest.fixture(scope="session")
def provenance_dir() -> Path:
    return shared_path("fixtures", "provenance")


def build_tiny_package(root: Path, name: str = "tiny-cnn", seed: int = 0, max_short_side: int | None = 64):
    """A randomly initialised small-cnn package with a real card (fast; no training)."""
    import torch

    from synthdetect.models.cnn import SmallCNN
    from synthdetect.models.package import write_package

    torch.manual_seed(seed)
    module = SmallCNN(width=4)
    root.mkdir(parents=True, exist_ok=True)
    weights = root / "weights.pt"
    torch.save(module.state_dict(), weights)
    card = {
        "name": name, "version": "0.0.1", "kind": "small-cnn", "description": "untrained test model",
        "architecture": module.hparams,
        "input": {"size": [32, 32], "resample": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3,
                  "min_side": 8, "max_aspect": 2.0, "max_short_side": max_short_side},
        "calibration": {"method": "temperature", "temperature": 1.0},
        "decision": {"ai_at_or_above": 0.9, "human_below": 0.1, "ai_rule": "test", "human_rule": "test"},
    }
    return write_package(root, card, {"weights": weights})


@pytest.fixture
def tiny_package(tmp_path):
    return build_tiny_package(tmp_path / "tiny-cnn")

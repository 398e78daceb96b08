"""Shared fixtures. Tests that read ../shared skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FCPOSE_SHARED", REPO.parent / "shared"))
COCO_TINY = SHARED / "data" / "coco_tiny"
DEMO_VIDEO = SHARED / "data" / "video" / "demo.mp4"
GOLDEN = SHARED / "golden" / "adelaidet_fcpose"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (shared test data not available here)")
    return path


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    return require(COCO_TINY / "person_keypoints.json").parent


@pytest.fixture
def demo_video() -> Path:
    return require(DEMO_VIDEO)


@pytest.fixture(scope="session")
def golden() -> Path:
    return require(GOLDEN / "NOTES.md").parent


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

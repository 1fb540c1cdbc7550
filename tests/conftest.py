"""Shared test helpers: the parity fixture directory and the tiny pipeline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURE = REPO.parent / "shared" / "fixtures" / "bagel-tiny"


def fixture_dir() -> Path:
    return Path(os.environ.get("SIGMA_PARITY_FIXTURE", DEFAULT_FIXTURE))


requires_fixture = pytest.mark.skipif(
    not (fixture_dir() / "model").is_dir(),
    reason=f"parity fixture not found at {fixture_dir()} (set SIGMA_PARITY_FIXTURE)",
)


def fixture_cases(kind: str) -> list[Path]:
    cases = fixture_dir() / "cases"
    if not cases.is_dir():
        return []
    return sorted(
        p
        for p in cases.iterdir()
        if (p / "case.json").is_file() and json.loads((p / "case.json").read_text())["kind"] == kind
    )


@pytest.fixture(scope="session")
def tiny_pipe():
    from model import load_pipeline

    return load_pipeline("tiny", seed=0)

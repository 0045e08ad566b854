"""Access to the public CAP sample corpus kept beside the project (never copied into it)."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "samples" / "cap"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


def sample_files(subdir: str) -> list[Path]:
    """The files of one corpus folder (valid-1.2, valid-1.1, invalid, nws-json), or []."""
    folder = SAMPLES_DIR / subdir
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file())


def sample_params(subdir: str) -> list[object]:
    """pytest parameters for a corpus folder; a single skipped case when it is absent."""
    files = sample_files(subdir)
    if not files:
        reason = f"public CAP sample corpus not found at {SAMPLES_DIR / subdir}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-corpus")]
    return [pytest.param(p, id=p.name) for p in files]

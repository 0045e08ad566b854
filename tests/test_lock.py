"""The lock file that `scripts/bootstrap.sh` installs from: every dependency pyproject.toml
names (main and the `dev` extra) is pinned there, at a version its specifier admits, so a
dependency changed without rerunning `scripts/lock` fails the suite."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
HINT = "pyproject.toml and requirements.lock disagree: run scripts/lock and commit the lock"


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(text)
        for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    ]


def pinned(text: str) -> dict[str, list[Version]]:
    pins: dict[str, list[Version]] = {}
    for name, version in PIN.findall(text):
        pins.setdefault(canonicalize_name(name), []).append(Version(version))
    return pins


def mismatches(requirements: list[Requirement], pins: dict[str, list[Version]]) -> list[str]:
    """What the lock lacks or pins outside a requirement's specifier."""
    found = []
    for requirement in requirements:
        versions = pins.get(canonicalize_name(requirement.name))
        if not versions:
            found.append(f"{requirement.name} is not pinned")
        for version in versions or ():
            if not requirement.specifier.contains(version, prereleases=True):
                found.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    return found


def test_every_declared_dependency_is_pinned_within_its_specifier() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    found = mismatches(declared(), pinned(lock))
    assert not found, f"{HINT} ({'; '.join(found)})"
    assert "--hash=sha256:" in lock  # bootstrap installs with --require-hashes


def test_a_forgotten_lock_is_named() -> None:
    pins = pinned("numpy==2.4.6 ; python_full_version < '3.12' \\\n    --hash=sha256:00\n")
    assert mismatches([Requirement("numpy>=1.26,<3")], pins) == []
    assert mismatches([Requirement("numpy>=3")], pins) == ["numpy==2.4.6 is outside >=3"]
    assert mismatches([Requirement("structlog>=24")], pins) == ["structlog is not pinned"]
    assert mismatches([Requirement("SQLAlchemy[asyncio]>=2.0")], pinned("sqlalchemy==2.1.9")) == []

"""The console's vendored scripts are exactly the pinned releases their manifest names, with
their licences beside them; every page template's static references exist."""

from __future__ import annotations

import base64
import hashlib
import json
import re

from dissemination.console.routes import STATIC_DIRECTORY

VENDOR = STATIC_DIRECTORY / "vendor"


def test_each_vendored_file_matches_its_pinned_checksum_and_has_its_licence() -> None:
    manifest = json.loads((VENDOR / "manifest.json").read_text())
    assert manifest, "the manifest names no vendored file"
    for name, entry in manifest.items():
        digest = hashlib.sha384((VENDOR / name).read_bytes()).digest()
        assert base64.b64encode(digest).decode() == entry["sha384"], f"{name} was changed"
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]), entry
        licence = entry["license"].split(" ")[0]
        assert (VENDOR / licence).is_file(), f"{name}: {licence} is missing"


def test_nothing_is_vendored_that_the_manifest_does_not_name() -> None:
    manifest = json.loads((VENDOR / "manifest.json").read_text())
    licences = {entry["license"].split(" ")[0] for entry in manifest.values()}
    present = {p.name for p in VENDOR.iterdir()} - {"manifest.json"}
    assert present == set(manifest) | licences


def test_every_static_file_a_template_names_exists() -> None:
    templates = STATIC_DIRECTORY.parent / "templates"
    named = set()
    for template in templates.glob("*.j2"):
        named |= set(re.findall(r"static\(filename='([^']+)'\)", template.read_text()))
    assert named, "no template names a static file"
    for name in named:
        assert (STATIC_DIRECTORY / name).is_file(), name

"""The client's dependencies are pinned (requirements/client.lock) and the environment the
tests run in holds exactly those versions, so "tested" means these versions."""

from __future__ import annotations

import re
from importlib import metadata

from .helpers import ROOT

LOCK = ROOT / "requirements" / "client.lock"


def pins() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_every_client_dependency_is_pinned():
    """The client distribution's own and its rooms' ([dicom], [score]) dependencies."""
    required = metadata.requires("aspects-client") or []
    direct = {
        re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]).lower()
        for r in required
    } - {"aspects-client"}
    assert direct, "no client dependencies found in the installed metadata"
    assert direct <= set(pins()), sorted(direct - set(pins()))


def test_the_test_environment_runs_the_locked_versions():
    wrong = {}
    for name, version in pins().items():
        installed = metadata.version(name)
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"lock vs installed: {wrong}; run scripts/setup_envs.sh"

"""Tests of the Prometheus and Alertmanager side of the deployment (``deploy/``)."""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "keymon-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "keymon-rules.test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_TEMPLATES = DEPLOY / "alertmanager" / "keymon.tmpl"
RUNBOOK = DEPLOY / "RUNBOOK.md"
PYPROJECT = ROOT / "pyproject.toml"


def project_url(root: Path = ROOT) -> str:
    """The project's URL, declared once: pyproject.toml's ``[project.urls] Repository``."""
    with (root / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["urls"]["Repository"])


#: Where every alert's runbook_url points: RUNBOOK.md under the project's URL.
RUNBOOK_BASE = f"{project_url()}/blob/main/deploy/RUNBOOK.md#"


def require_tool(*names: str) -> str:
    """The path of the first of ``names`` on PATH; skip without it, fail without it on CI.

    ``scripts/install-tools`` installs them (Debian packages ``prometheus`` and
    ``prometheus-alertmanager``; Debian names the Alertmanager binary
    ``prometheus-alertmanager``).
    """
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    wanted = " or ".join(names)
    if os.environ.get("CI"):
        pytest.fail(f"{wanted} is not installed; CI must run scripts/install-tools first")
    pytest.skip(f"{wanted} is not installed (scripts/install-tools installs it)")

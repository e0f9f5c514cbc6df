"""The project's URL is declared once (pyproject.toml) and every link in deploy/ follows it.

``scripts/set-project-url`` is the one thing a fork runs: it is exercised on a copy of the
files it rewrites, and the same checks then hold for the fork's URL.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy import ROOT, project_url
from tests.deploy.test_rules import _slug

SET_PROJECT_URL = ROOT / "scripts" / "set-project-url"
BUILD_IMAGE = ROOT / "scripts" / "build-image"
#: Everything set-project-url reads or rewrites, relative to the repository root.
COPIED = (
    "pyproject.toml",
    "Dockerfile",
    "scripts/set-project-url",
    "deploy/RUNBOOK.md",
    "deploy/README.md",
    "deploy/prometheus",
    "deploy/grafana",
    "deploy/kubernetes/monitoring",
)
FORK = "https://git.example.org/desk/keymon-fork"


def _anchors(root: Path) -> set[str]:
    text = (root / "deploy" / "RUNBOOK.md").read_text()
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.+)$", text, re.MULTILINE)}


def _runbook_urls(root: Path) -> list[tuple[str, str]]:
    """(file, url) for every runbook_url of the rules, their unit tests and the PrometheusRule."""
    found = []
    for relative in (
        "deploy/prometheus/keymon-rules.yml",
        "deploy/prometheus/keymon-rules.test.yml",
        "deploy/kubernetes/monitoring/prometheusrule.yaml",
    ):
        text = (root / relative).read_text()
        found += [(relative, url) for url in re.findall(r"runbook_url: \"?([^\"\s]+)", text)]
    return found


def inconsistencies(root: Path) -> list[str]:
    """Every link of the deployment files that does not follow pyproject.toml's URL."""
    url = project_url(root)
    problems = []
    runbook = f"{url}/blob/main/deploy/RUNBOOK.md"
    anchors = _anchors(root)
    urls = _runbook_urls(root)
    if len(urls) < 18:
        problems.append(f"only {len(urls)} runbook_url found")
    for relative, link in urls:
        base, _, anchor = link.partition("#")
        if base != runbook:
            problems.append(f"{relative}: {link} is not under {runbook}")
        elif anchor not in anchors:
            problems.append(f"{relative}: {link}: RUNBOOK.md has no heading #{anchor}")
    dashboard = json.loads((root / "deploy" / "grafana" / "keymon-dashboard.json").read_text())
    for link in dashboard.get("links", []):
        target = link["url"]
        if not target.startswith(f"{url}/blob/main/"):
            problems.append(f"dashboard link {target} is not under {url}/blob/main/")
        elif not (root / target.removeprefix(f"{url}/blob/main/").partition("#")[0]).exists():
            problems.append(f"dashboard link {target} names no file of the repository")
    dockerfile = (root / "Dockerfile").read_text()
    if f"ARG PROJECT_URL={url}\n" not in dockerfile:
        problems.append(f"Dockerfile: ARG PROJECT_URL is not {url}")
    labels = dict(
        re.findall(r"(org\.opencontainers\.image\.\w+(?:\.\w+)?)=\"([^\"]*)\"", dockerfile)
    )
    for name in ("url", "source", "documentation"):
        if not labels.get(f"org.opencontainers.image.{name}", "").startswith("${PROJECT_URL}"):
            problems.append(f"Dockerfile: label {name} does not derive from ${{PROJECT_URL}}")
    readme = (root / "deploy" / "README.md").read_text()
    for value in re.findall(r"PROJECT_URL=(\S+)", readme):
        if value != url:
            problems.append(f"deploy/README.md: PROJECT_URL={value} is not {url}")
    # No other address of a repository anywhere in these files.
    for relative in ("Dockerfile", "deploy"):
        paths = [root / relative] if (root / relative).is_file() else (root / relative).rglob("*")
        for path in paths:
            if path.is_file() and path.suffix in {"", ".yml", ".yaml", ".json", ".md", ".tmpl"}:
                for link in re.findall(
                    r"https?://[^\s\"')>\]]+/blob/[^\s\"')>\]]+", path.read_text()
                ):
                    if not link.startswith(f"{url}/blob/"):
                        problems.append(f"{path.relative_to(root)}: {link} is not under {url}")
    return problems


def test_every_link_in_deploy_follows_the_url_declared_in_pyproject() -> None:
    """runbook_url, dashboard link and image labels all start with pyproject's Repository."""
    assert project_url().startswith("https://")
    assert inconsistencies(ROOT) == []


def test_pyproject_declares_the_four_project_urls() -> None:
    """Homepage, Repository, Documentation and Issues, all under one URL."""
    import tomllib

    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    url = project_url()
    assert urls == {
        "Homepage": url,
        "Repository": url,
        "Documentation": f"{url}#readme",
        "Issues": f"{url}/issues",
    }


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for relative in COPIED:
        source, target = ROOT / relative, root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return root


def test_a_fork_changes_one_thing_and_every_link_follows(tmp_path: Path) -> None:
    """set-project-url rewrites pyproject and every derived place; nothing of the old URL stays."""
    root = _copy(tmp_path)
    old = project_url(root)
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "set-project-url"), FORK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert project_url(root) == FORK
    assert inconsistencies(root) == []
    for path in root.rglob("*"):
        if path.is_file():
            assert old not in path.read_text(), path
    rules = yaml.safe_load((root / "deploy/prometheus/keymon-rules.yml").read_text())
    urls = [
        r["annotations"]["runbook_url"] for g in rules["groups"] for r in g["rules"] if "alert" in r
    ]
    assert urls
    assert all(u.startswith(f"{FORK}/blob/main/deploy/RUNBOOK.md#") for u in urls)
    # Idempotent, and the repository's own files are untouched.
    again = subprocess.run(
        [sys.executable, str(root / "scripts" / "set-project-url"), FORK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0
    assert inconsistencies(root) == []
    assert project_url() == old


@pytest.mark.parametrize("bad", ["http://example.org/x", "https://example.org/x/", "nope"])
def test_set_project_url_refuses_a_bad_url(bad: str, tmp_path: Path) -> None:
    """A URL that is not https://host/path without a trailing slash: usage, exit 2, no change."""
    root = _copy(tmp_path)
    before = (root / "pyproject.toml").read_text()
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "set-project-url"), bad],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "usage: scripts/set-project-url" in result.stderr
    assert (root / "pyproject.toml").read_text() == before


def test_build_image_passes_the_declared_url_and_the_callers_arguments() -> None:
    """scripts/build-image hands docker build pyproject's URL, the version, and what it is given."""
    result = subprocess.run(
        [str(BUILD_IMAGE), "--build-arg", "BASE_IMAGE=python@sha256:" + "0" * 64],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "DOCKER": "echo", "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr
    args = result.stdout.split()
    assert args[:3] == ["build", "-t", "keymon:0.1.0"]
    assert f"PROJECT_URL={project_url()}" in args
    assert "VERSION=0.1.0" in args
    assert args[-3:] == ["--build-arg", "BASE_IMAGE=python@sha256:" + "0" * 64, "."]

#!/usr/bin/env python3
"""Write prometheusrule.yaml: the PrometheusRule holding deploy/prometheus/keymon-rules.yml.

The rule groups are copied unchanged, so the Prometheus Operator and a plain Prometheus load
the same alerts; tests/deploy/test_artifacts.py fails when the two drift apart. Run it after
every change to keymon-rules.yml:

    python3 deploy/kubernetes/monitoring/generate-prometheusrule.py          # rewrite
    python3 deploy/kubernetes/monitoring/generate-prometheusrule.py --check  # exit 1 if stale
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "prometheus" / "keymon-rules.yml"
OUTPUT = HERE / "prometheusrule.yaml"
HEADER = """\
# GENERATED from deploy/prometheus/keymon-rules.yml by generate-prometheusrule.py: do not
# edit; change keymon-rules.yml and run the script (the tests check they agree).
"""


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (the expressions), as in keymon-rules.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    """The PrometheusRule's text for the current rules file."""
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "keymon"},
        "spec": {"groups": groups},
    }
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

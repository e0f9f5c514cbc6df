"""``keymon healthcheck``: is the daemon of this configuration answering ``/healthz``?

The container's ``HEALTHCHECK`` runs it every 30 s, so it is light: the standard library and
PyYAML only (``python -m keymon.healthcheck`` starts in a fraction of the time ``keymon``'s full
command line takes), and it never resolves a secret, never validates the whole file and never
writes anything.

Where to look comes from the same places as the daemon's own ``listen``: the environment
override ``KEYMON_LISTEN``, else the ``listen:`` of the configuration file (``--config``, else
``$KEYMON_CONFIG``, else ``config/keymon.yaml``), else keymon's default ``0.0.0.0:9877``. A
wildcard host (``0.0.0.0``, ``::``, empty) is reached on loopback (``127.0.0.1``, ``::1``); a
specific address or name is called as it is.

Exit status: 0 when ``/healthz`` answers 200; 1 otherwise (refused, timed out, another status,
no usable listen address), with one line on stderr saying why: Docker records it in the
container's health log. (Docker reserves exit status 2.)

This module also holds the defaults the rest of keymon shares with it (:data:`DEFAULT_LISTEN`,
:data:`DEFAULT_CONFIG_PATH`) and the ``host:port`` syntax (:func:`split_listen`), so the
configuration and the health check cannot disagree about them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

DEFAULT_CONFIG_PATH = Path("config/keymon.yaml")
#: The variable every command reads its default ``--config`` from (the image sets it).
CONFIG_ENV = "KEYMON_CONFIG"
DEFAULT_LISTEN = "0.0.0.0:9877"
#: The environment override of ``listen`` (pydantic-settings: ``KEYMON_`` + field name).
LISTEN_ENV = "KEYMON_LISTEN"
#: How long one probe waits for ``/healthz``: below the image's HEALTHCHECK timeout (5 s).
TIMEOUT = 4.0
EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1
#: The health check reads at most this much of the configuration file (the loader's limit).
_MAX_CONFIG_BYTES = 8 * 1024 * 1024

_LISTEN = re.compile(r"(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]\s]*)):(\d{1,5})")


def split_listen(value: str) -> tuple[str, int] | None:
    """``host:port`` (``[::]:9877`` for IPv6) as its parts, None if it is not that shape.

    An empty host means every address (``:9877`` is ``0.0.0.0:9877``); port 0 asks for any free
    port (tests).
    """
    match = _LISTEN.fullmatch(value)
    if not match or not 0 <= int(match.group(3)) < 65536:
        return None
    return (match.group(1) or match.group(2) or "0.0.0.0", int(match.group(3)))  # noqa: S104


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Every command's default ``--config``: ``$KEYMON_CONFIG``, else ``config/keymon.yaml``."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def listen_of(config: Path, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The daemon's ``listen`` and where it comes from, without validating the file.

    The file is read only for its top-level ``listen:``. A file that cannot be read or parsed
    leaves the default (the daemon would not run on it either, or runs its previous version).
    """
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if name.upper() == LISTEN_ENV:
            return value, f"environment variable {name}"
    try:
        with config.open("rb") as handle:
            data = handle.read(_MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError):
        return DEFAULT_LISTEN, f"default; {config} cannot be read"
    listen = _top_level_listen(data) if len(data) <= _MAX_CONFIG_BYTES else None
    if listen is None:
        return DEFAULT_LISTEN, f"default; no listen in {config}"
    return listen, str(config)


def _top_level_listen(data: bytes) -> str | None:
    import yaml  # only once the file is there

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader
    except (yaml.YAMLError, ValueError, TypeError, RecursionError):
        return None
    value = document.get("listen") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def probe_url(listen: str) -> str | None:
    """The ``/healthz`` URL of a daemon listening on ``listen``; None if it cannot be probed."""
    parts = split_listen(listen)
    if parts is None or parts[1] == 0:
        return None
    host, port = parts
    if host in ("0.0.0.0", ""):  # noqa: S104 - every IPv4 address: loopback is one
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def healthcheck(
    config: Path, *, environ: Mapping[str, str] | None = None, timeout: float = TIMEOUT
) -> tuple[int, str]:
    """Probe the daemon of ``config``: the exit status and one line saying what was seen."""
    listen, source = listen_of(config, environ)
    url = probe_url(listen)
    if url is None:
        return EXIT_UNHEALTHY, (
            f"keymon healthcheck: listen '{listen[:60]}' (from {source}) is not a host:port "
            "with a fixed port"
        )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http only
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        why = getattr(reason, "strerror", None) or str(reason) or type(exc).__name__
        return EXIT_UNHEALTHY, f"keymon healthcheck: {url} (listen from {source}): {why}"
    if status == 200:
        return EXIT_HEALTHY, f"keymon healthcheck: {url}: healthy"
    return EXIT_UNHEALTHY, f"keymon healthcheck: {url} (listen from {source}): HTTP {status}"


class _Parser(argparse.ArgumentParser):
    """A usage error is unhealthy (1), not argparse's 2: Docker reserves 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNHEALTHY, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m keymon.healthcheck [--config PATH]``, as ``keymon healthcheck``."""
    parser = _Parser(
        prog="keymon healthcheck", description="GET /healthz of this configuration's daemon."
    )
    parser.add_argument("--config", type=Path, default=default_config_path(), metavar="PATH")
    args = parser.parse_args(argv)
    status, line = healthcheck(args.config)
    print(line, file=sys.stdout if status == EXIT_HEALTHY else sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

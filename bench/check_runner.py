"""``keymon check`` with a chosen httpx transport, for the transport comparison.

``python -m bench.check_runner --transport httpx|aiohttp --config PATH`` is ``keymon check
--config PATH --format json`` (the same :func:`keymon.cli.check`, same output and exit status)
except that the transport under keymon's read-only guard is the one named, handed in through
``check``'s ``transport_factory`` seam:

* ``httpx``: :class:`httpx.AsyncHTTPTransport` (httpcore), as keymon built it before;
* ``aiohttp``: :class:`httpx_aiohttp.AiohttpTransport` (httpx's API on an aiohttp session).

The plain ``python -m keymon check`` run of the benchmark uses whatever
:func:`keymon.exchanges.base.build_client` picks by default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from keymon.cli import check

TRANSPORTS = ("httpx", "aiohttp")


def make_transport(name: str) -> httpx.AsyncBaseTransport:
    """A fresh transport of the named kind (built inside the running event loop)."""
    if name == "httpx":
        return httpx.AsyncHTTPTransport(retries=0)
    if name == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(trust_env=False)
    raise ValueError(f"unknown transport {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.check_runner", description=__doc__)
    parser.add_argument("--transport", choices=TRANSPORTS, required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    transport: str = args.transport
    return check(
        args.config, fmt="json", transport_factory=lambda _exchange: make_transport(transport)
    )


if __name__ == "__main__":
    sys.exit(main())

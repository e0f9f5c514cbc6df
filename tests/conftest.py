"""Shared fixtures: an injected clock, a Binance simulator, and settings pointing at it.

No test binds a fixed port: servers listen on ``127.0.0.1:0`` and say which port they got.
keymon's default ``listen`` (``0.0.0.0:9877``) and the demo's (``127.0.0.1:9877``) are in use
whenever ``scripts/demo`` or a local daemon runs, so a test that binds them fails on a
developer's machine but not in CI. :func:`_hold_default_port` makes CI see it too: for the
whole session it holds port 9877 (a listening socket on ``0.0.0.0:9877`` blocks binding
``127.0.0.1:9877`` and ``0.0.0.0:9877`` alike), so such a test fails every time, with
"address already in use". ``KEYMON_TEST_FREE_PORT=1`` leaves the port alone.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from keymon import log as logging_setup
from keymon.config import Settings
from keymon.simulator.binance import BinanceSimulator

#: The credentials of Binance's official signature examples (exchange-apis.md §1.3).
DOC_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
#: A secret whose value must never surface anywhere keymon writes.
SENTINEL = "SENTINELs3cr3tZZq9Xw4Lm7Pv2Rk8Tn5Yb1Hc6Jd0Fg3"


class FakeClock:
    """A wall clock tests move by hand; starts at a fixed, recent moment."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


#: keymon's default listen port (config.py) and the demo's; no test may bind it.
DEFAULT_PORT = 9877


@pytest.fixture(scope="session", autouse=True)
def _hold_default_port() -> Iterator[None]:
    """Hold port 9877 for the session (see the module docstring), if it is free.

    If something else already holds it (``scripts/demo``), that serves the same purpose.
    """
    if os.environ.get("KEYMON_TEST_FREE_PORT") == "1":
        yield
        return
    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", DEFAULT_PORT))  # held, never served
        holder.listen()
    except OSError:  # already taken by someone else: tests see it taken either way
        holder.close()
        yield
        return
    try:
        yield
    finally:
        holder.close()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults and no secrets to redact.

    Commands under test configure logging process-wide onto the captured stderr of their
    test; without this the next test would log into a closed stream.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    logging_setup.redactor.update(())
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def clock() -> FakeClock:
    """A fake wall clock shared by keymon and the simulator."""
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> BinanceSimulator:
    """A Binance simulator on the fake clock, holding the official example key."""
    simulator = BinanceSimulator(clock=clock)
    simulator.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    return simulator


def key_entry(name: str, api_key: str, secret: str, **extra: Any) -> dict[str, Any]:
    """One ``keys:`` entry with literal secrets (tests only)."""
    return {
        "name": name,
        "client": "acme",
        "exchange": "binance",
        "api_key": api_key,
        "api_secret": secret,
        **extra,
    }


def make_settings(
    *keys: dict[str, Any], base_url: str = "https://binance.test", **overrides: Any
) -> Settings:
    """Settings for the given key entries, pointing at ``base_url``."""
    data: dict[str, Any] = {
        "keys": list(keys) or [key_entry("doc-key", DOC_API_KEY, DOC_SECRET)],
        "exchanges": {"binance": {"base_url": base_url}},
        "trusted_ips": ["127.0.0.1/32"],
    }
    data.update(overrides)
    return Settings(**data)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    """Build settings for key entries (see :func:`make_settings`)."""
    return make_settings


@pytest.fixture
def served(sim: BinanceSimulator) -> Iterator[str]:
    """The simulator served for real on 127.0.0.1; yields its base URL."""
    with sim.serve_in_thread() as url:
        yield url


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; for waiting on another process, never for ordering."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


#: The exchange modules every exchange's code needs, whichever exchange it is.
SHARED_EXCHANGE_MODULES = ["keymon.exchanges.base", "keymon.exchanges.common"]


def exchange_modules_after(script: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """Run ``script`` (Python, ``sys.argv[1:]`` = ``args``) in a fresh interpreter, as a keymon
    command starts, and return its printed lines, then the ``keymon.exchanges.*`` modules it
    had imported at its end, sorted, as the last item joined by spaces."""
    listing = (
        "\nprint(' '.join(sorted(m for m in sys.modules if m.startswith('keymon.exchanges.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + script + listing, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    return done.stdout.splitlines()

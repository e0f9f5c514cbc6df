"""The exchange registry (:data:`keymon.exchanges.EXCHANGES`): every adapter module is in it,
under its own name, and is imported only when its class is asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import keymon.exchanges
from keymon.exchanges import CONFIG_ORDER, EXCHANGES

#: Modules of keymon/exchanges that hold shared plumbing, not an exchange.
SHARED = {"__init__", "base", "common", "liveness"}


def test_every_exchange_module_is_registered_under_its_own_name() -> None:
    package = Path(keymon.exchanges.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} - SHARED
    assert set(EXCHANGES) == modules == set(CONFIG_ORDER)
    for name in EXCHANGES:
        adapter = EXCHANGES[name]
        assert adapter.name == name
        assert adapter.__module__ == f"keymon.exchanges.{name}"
        assert getattr(keymon.exchanges, adapter.__name__) is adapter


def test_an_unknown_name_is_no_exchange() -> None:
    assert "binanse" not in EXCHANGES
    read_from_a_file: object = ["binance"]  # a value read from a file may be anything
    assert read_from_a_file not in EXCHANGES
    with pytest.raises(KeyError):
        EXCHANGES["binanse"]
    with pytest.raises(AttributeError):
        _ = keymon.exchanges.BinanseAdapter


def test_naming_the_exchanges_imports_none_of_them() -> None:
    """Iterating the names (messages, the configuration) imports no adapter; asking for one
    class imports that one module."""
    script = (
        "import sys\n"
        "from keymon.exchanges import EXCHANGES\n"
        "names = list(EXCHANGES)\n"
        "loaded = lambda: sorted(m for m in sys.modules if m.startswith('keymon.exchanges.'))\n"
        "print(len(names), ' '.join(loaded()))\n"
        "EXCHANGES['okx']\n"
        "print(' '.join(loaded()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    named, asked = done.stdout.splitlines()
    assert named == "17 keymon.exchanges.base"
    assert asked.split() == [
        "keymon.exchanges.base",
        "keymon.exchanges.common",
        "keymon.exchanges.okx",
    ]

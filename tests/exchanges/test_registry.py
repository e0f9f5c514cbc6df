"""The exchange registry (:data:`keymon.exchanges.EXCHANGES`): every adapter module is in it,
under its own name, and is imported only when its class is asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

import keymon.exchanges
from keymon.exchanges import CONFIG_ORDER, EXCHANGES
from tests.conftest import SHARED_EXCHANGE_MODULES, exchange_modules_after

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
        "from keymon.exchanges import EXCHANGES\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('keymon.exchanges.'))\n"
        "print(len(list(EXCHANGES)), ' '.join(loaded))\n"
        "EXCHANGES['okx']\n"
    )
    named, asked = exchange_modules_after(script)
    assert named == "17 keymon.exchanges.base"
    assert asked.split() == sorted([*SHARED_EXCHANGE_MODULES, "keymon.exchanges.okx"])

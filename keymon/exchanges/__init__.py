"""Exchange adapters, registered by name.

An exchange lives in two modules (see CONTRIBUTING.md): its module here, which defines its
settings section, its key model (with its own validation), its constants, its adapter and the
adapter's read-only allowlist, declared as ``class <Name>Adapter(AdapterBase,
settings_model=..., key_model=...)`` and registered in ``_ADAPTER_CLASSES`` (and its name in
:data:`CONFIG_ORDER`); and its simulator in :mod:`keymon.simulator` (in ``SIMULATORS``), which
also offers its ``keymon demo`` keys. :data:`EXCHANGES` imports an adapter's module when its
class is first asked for. :mod:`keymon.config` builds the ``exchanges:`` section and the
``keys[]`` union of the exchanges a configuration uses from this registry. An exchange that
shows a key nothing about itself subclasses :class:`~keymon.exchanges.liveness.LivenessAdapter`,
its simulator :class:`~keymon.simulator.liveness.LivenessSimulator`, and its venue goes into the
liveness contract suite. :data:`EXCHANGES` lists the introspecting exchanges first.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from keymon.exchanges.base import ExchangeAdapter, ReadOnlyTransport, RequestGate, build_client
from keymon.model import Coverage

if TYPE_CHECKING:
    from keymon.exchanges.biconomy import BiconomyAdapter
    from keymon.exchanges.binance import BinanceAdapter
    from keymon.exchanges.bingx import BingxAdapter
    from keymon.exchanges.bitget import BitgetAdapter
    from keymon.exchanges.bitmart import BitmartAdapter
    from keymon.exchanges.bitrue import BitrueAdapter
    from keymon.exchanges.bybit import BybitAdapter
    from keymon.exchanges.coinbase import CoinbaseAdapter
    from keymon.exchanges.coinstore import CoinstoreAdapter
    from keymon.exchanges.gate import GateAdapter
    from keymon.exchanges.htx import HtxAdapter
    from keymon.exchanges.kraken import KrakenAdapter
    from keymon.exchanges.kucoin import KucoinAdapter
    from keymon.exchanges.lbank import LbankAdapter
    from keymon.exchanges.mexc import MexcAdapter
    from keymon.exchanges.okx import OkxAdapter
    from keymon.exchanges.xt import XtAdapter

#: Each exchange's adapter class, by the module that defines it (``keymon.exchanges.<name>``).
_ADAPTER_CLASSES: dict[str, str] = {
    "binance": "BinanceAdapter",
    "bybit": "BybitAdapter",
    "okx": "OkxAdapter",
    "kucoin": "KucoinAdapter",
    "bitget": "BitgetAdapter",
    "htx": "HtxAdapter",
    "gate": "GateAdapter",
    "kraken": "KrakenAdapter",
    "bingx": "BingxAdapter",
    "coinbase": "CoinbaseAdapter",
    "xt": "XtAdapter",
    "mexc": "MexcAdapter",
    "bitmart": "BitmartAdapter",
    "bitrue": "BitrueAdapter",
    "lbank": "LbankAdapter",
    "coinstore": "CoinstoreAdapter",
    "biconomy": "BiconomyAdapter",
}


class _Registry(Mapping[str, type[ExchangeAdapter]]):
    """Exchange name -> adapter class, each adapter's module imported when its class is first
    asked for.

    An exchange's module builds its settings and key models (pydantic) when imported: the 16
    a one-exchange configuration does not use were a fifth of ``keymon check``'s imports. Names
    (iteration, ``in``, ``len``) need no import; ``items()`` and ``values()`` import every
    adapter.
    """

    def __init__(self) -> None:
        self._loaded: dict[str, type[ExchangeAdapter]] = {}

    def __getitem__(self, name: str) -> type[ExchangeAdapter]:
        adapter = self._loaded.get(name)
        if adapter is None:
            if name not in _ADAPTER_CLASSES:
                raise KeyError(name)
            module = importlib.import_module(f"{__name__}.{name}")
            adapter = self._loaded[name] = getattr(module, _ADAPTER_CLASSES[name])
        return adapter

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in _ADAPTER_CLASSES

    def __iter__(self) -> Iterator[str]:
        return iter(_ADAPTER_CLASSES)

    def __len__(self) -> int:
        return len(_ADAPTER_CLASSES)

    def __repr__(self) -> str:
        return f"<exchange registry: {', '.join(_ADAPTER_CLASSES)}>"


#: Every supported exchange's adapter, by name, introspecting exchanges first.
EXCHANGES: Mapping[str, type[ExchangeAdapter]] = _Registry()


class _Coverages(Mapping[str, Coverage]):
    """Exchange name -> what its adapter can see of a key, read off the adapter when asked
    (importing only that exchange's module)."""

    def __getitem__(self, name: str) -> Coverage:
        return EXCHANGES[name].coverage

    def __iter__(self) -> Iterator[str]:
        return iter(EXCHANGES)

    def __len__(self) -> int:
        return len(EXCHANGES)


#: Every supported exchange's coverage (introspection or liveness), by name.
COVERAGE: Mapping[str, Coverage] = _Coverages()


def __getattr__(name: str) -> Any:
    """``from keymon.exchanges import BinanceAdapter`` and the like, imported on first use."""
    for exchange, class_name in _ADAPTER_CLASSES.items():
        if class_name == name:
            return EXCHANGES[exchange]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The order the configuration lists the exchanges in (``keys[].exchange`` messages,
#: ``exchanges:``): as they were added, XT among the liveness-only ones it joined as.
CONFIG_ORDER: tuple[str, ...] = (
    "binance",
    "bybit",
    "okx",
    "kucoin",
    "bitget",
    "htx",
    "gate",
    "kraken",
    "bingx",
    "coinbase",
    "mexc",
    "bitmart",
    "bitrue",
    "xt",
    "lbank",
    "coinstore",
    "biconomy",
)
assert sorted(CONFIG_ORDER) == sorted(EXCHANGES)


def audit_cost(adapter: type[ExchangeAdapter], settings: Any) -> int:
    """The *mandatory* weight one audit of a key spends in keymon's budget (clock syncs
    aside) under the exchange's ``settings``: the adapter's ``audit_weight_for(settings)``
    (several calls granted at once), or its heaviest call. Optional reads (:func:`extras_cost`,
    Binance's trading status) are not in it: the daemon pays them only from spare budget.

    Where the weights come from: each adapter's ``weights`` (the exchange's own unit, cited
    in its module) and ``audit_weight``; ``interval: auto`` and the scheduler plan with it.
    """
    weights: dict[str, int] = dict(getattr(adapter, "weights", {}))
    time_path = getattr(adapter, "time_path", None)
    extras = set(getattr(adapter, "extras_paths", ()))
    calls = [w for path, w in weights.items() if path != time_path and path not in extras]
    return max(adapter.audit_weight_for(settings), max(calls, default=1))


def extras_cost(adapter: type[ExchangeAdapter], settings: Any) -> int:
    """The weight of one audit's optional reads under ``settings`` (0: none): Binance's
    ``apiTradingStatus`` and ``account/status``, HTX's ``/v1/account/accounts``, when
    ``trading_status`` is on."""
    return adapter.extras_weight_for(settings)


__all__ = [
    "CONFIG_ORDER",
    "COVERAGE",
    "EXCHANGES",
    "BiconomyAdapter",
    "BinanceAdapter",
    "BingxAdapter",
    "BitgetAdapter",
    "BitmartAdapter",
    "BitrueAdapter",
    "BybitAdapter",
    "CoinbaseAdapter",
    "CoinstoreAdapter",
    "ExchangeAdapter",
    "GateAdapter",
    "HtxAdapter",
    "KrakenAdapter",
    "KucoinAdapter",
    "LbankAdapter",
    "MexcAdapter",
    "OkxAdapter",
    "ReadOnlyTransport",
    "RequestGate",
    "XtAdapter",
    "audit_cost",
    "build_client",
    "extras_cost",
]

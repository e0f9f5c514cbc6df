"""Exchange adapters, registered by name.

An exchange lives in two modules (see CONTRIBUTING.md): its module here, which defines its
settings section, its key model (with its own validation), its constants, its adapter and the
adapter's read-only allowlist, declared as ``class <Name>Adapter(AdapterBase,
settings_model=..., key_model=...)`` and registered in :data:`EXCHANGES` (and its name in
:data:`CONFIG_ORDER`); and its simulator in :mod:`keymon.simulator` (in ``SIMULATORS``), which
also offers its ``keymon demo`` keys. :mod:`keymon.config` builds the ``exchanges:`` section and
the ``keys[]`` union from this registry. An exchange that shows a key nothing about itself
subclasses :class:`~keymon.exchanges.liveness.LivenessAdapter`, its simulator
:class:`~keymon.simulator.liveness.LivenessSimulator`, and its venue goes into the liveness
contract suite. :data:`EXCHANGES` lists the introspecting exchanges first.
"""

from __future__ import annotations

from typing import Any

from keymon.exchanges.base import ExchangeAdapter, ReadOnlyTransport, RequestGate, build_client
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

EXCHANGES: dict[str, type[ExchangeAdapter]] = {
    "binance": BinanceAdapter,
    "bybit": BybitAdapter,
    "okx": OkxAdapter,
    "kucoin": KucoinAdapter,
    "bitget": BitgetAdapter,
    "htx": HtxAdapter,
    "gate": GateAdapter,
    "kraken": KrakenAdapter,
    "bingx": BingxAdapter,
    "coinbase": CoinbaseAdapter,
    "xt": XtAdapter,
    "mexc": MexcAdapter,
    "bitmart": BitmartAdapter,
    "bitrue": BitrueAdapter,
    "lbank": LbankAdapter,
    "coinstore": CoinstoreAdapter,
    "biconomy": BiconomyAdapter,
}
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
    "EXCHANGES",
    "BiconomyAdapter",
    "BinanceAdapter",
    "BingxAdapter",
    "BitgetAdapter",
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
    "audit_cost",
    "build_client",
    "extras_cost",
]

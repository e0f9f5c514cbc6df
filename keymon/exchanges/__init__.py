"""Exchange adapters, registered by name.

Adding an exchange: its module here, an entry in :data:`EXCHANGES`, a key model and settings
section in :mod:`keymon.config`, a simulator in :mod:`keymon.simulator`, the contract suite's
parameters and a row in the README's exchange table.
"""

from __future__ import annotations

from keymon.exchanges.base import ExchangeAdapter, ReadOnlyTransport, RequestGate, build_client
from keymon.exchanges.binance import BinanceAdapter
from keymon.exchanges.bingx import BingxAdapter
from keymon.exchanges.bitget import BitgetAdapter
from keymon.exchanges.bybit import BybitAdapter
from keymon.exchanges.coinbase import CoinbaseAdapter
from keymon.exchanges.gate import GateAdapter
from keymon.exchanges.htx import HtxAdapter
from keymon.exchanges.kraken import KrakenAdapter
from keymon.exchanges.kucoin import KucoinAdapter
from keymon.exchanges.okx import OkxAdapter

EXCHANGES: dict[str, type[ExchangeAdapter]] = {
    "binance": BinanceAdapter,
    "bybit": BybitAdapter,
    "bitget": BitgetAdapter,
    "htx": HtxAdapter,
    "kucoin": KucoinAdapter,
    "okx": OkxAdapter,
    "gate": GateAdapter,
    "kraken": KrakenAdapter,
    "bingx": BingxAdapter,
    "coinbase": CoinbaseAdapter,
}

__all__ = [
    "EXCHANGES",
    "BinanceAdapter",
    "BingxAdapter",
    "BitgetAdapter",
    "BybitAdapter",
    "CoinbaseAdapter",
    "ExchangeAdapter",
    "GateAdapter",
    "HtxAdapter",
    "KrakenAdapter",
    "KucoinAdapter",
    "OkxAdapter",
    "ReadOnlyTransport",
    "RequestGate",
    "build_client",
]

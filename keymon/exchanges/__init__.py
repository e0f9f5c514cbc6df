"""Exchange adapters, registered by name.

Adding an exchange: its module here, an entry in :data:`EXCHANGES`, a key model and settings
section in :mod:`keymon.config`, a simulator in :mod:`keymon.simulator`, the contract suite's
parameters and a row in the README's exchange table.
"""

from __future__ import annotations

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
    "bitget": BitgetAdapter,
    "htx": HtxAdapter,
    "kucoin": KucoinAdapter,
    "okx": OkxAdapter,
    "gate": GateAdapter,
    "mexc": MexcAdapter,
    "bitmart": BitmartAdapter,
    "xt": XtAdapter,
    "bitrue": BitrueAdapter,
    "lbank": LbankAdapter,
    "coinstore": CoinstoreAdapter,
    "biconomy": BiconomyAdapter,
    "kraken": KrakenAdapter,
    "bingx": BingxAdapter,
    "coinbase": CoinbaseAdapter,
}

__all__ = [
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
    "build_client",
]

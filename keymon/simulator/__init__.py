"""Fake exchanges for keymon's tests and demos, written from the exchanges' documentation.

Each simulator is an independent implementation of an exchange's documented REST behaviour
(signing, errors, rate limits) so that keymon can be tested against the exchange's rules rather
than against its own adapter code. Nothing here imports from the rest of keymon. Serve a
simulator in-process through an httpx transport, on a real local port (`SimulatorServer`,
`serve_in_thread`), or standalone with ``python -m keymon.simulator``. Each simulator module
also offers the ``keymon demo`` keys of its exchange (``DEMO``, collected in
:data:`DEMO_VENUES`).
"""

import sys
from typing import Any

from keymon.simulator.biconomy import BiconomySimulator
from keymon.simulator.binance import (
    API_KEY_HEADER,
    BinanceSimulator,
    LoggedRequest,
    signed_payload,
    verify_hmac,
)
from keymon.simulator.bingx import BingxSimulator
from keymon.simulator.bitget import BitgetSimulator
from keymon.simulator.bitmart import BitmartSimulator
from keymon.simulator.bitrue import BitrueSimulator
from keymon.simulator.bybit import BybitSimulator
from keymon.simulator.coinbase import CoinbaseSimulator
from keymon.simulator.coinstore import CoinstoreSimulator
from keymon.simulator.demo_keys import DemoKey, DemoVenue
from keymon.simulator.gate import GateSimulator
from keymon.simulator.htx import HtxSimulator
from keymon.simulator.kraken import KrakenSimulator
from keymon.simulator.kucoin import KucoinSimulator
from keymon.simulator.lbank import LbankSimulator
from keymon.simulator.mexc import MexcSimulator
from keymon.simulator.okx import OkxSimulator
from keymon.simulator.server import (
    ADMIN_PREFIX,
    Handler,
    SimResponse,
    SimulatorAsyncTransport,
    SimulatorServer,
    SimulatorSyncTransport,
    serve_in_thread,
)
from keymon.simulator.xt import XtSimulator

#: Every simulated exchange by its keymon name (``exchange:`` in the configuration).
SIMULATORS: dict[str, type[Any]] = {
    "binance": BinanceSimulator,
    "bybit": BybitSimulator,
    "okx": OkxSimulator,
    "kucoin": KucoinSimulator,
    "bitget": BitgetSimulator,
    "htx": HtxSimulator,
    "gate": GateSimulator,
    "kraken": KrakenSimulator,
    "bingx": BingxSimulator,
    "coinbase": CoinbaseSimulator,
    "mexc": MexcSimulator,
    "bitmart": BitmartSimulator,
    "bitrue": BitrueSimulator,
    "xt": XtSimulator,
    "lbank": LbankSimulator,
    "coinstore": CoinstoreSimulator,
    "biconomy": BiconomySimulator,
}


def _demo_venue(simulator: type[Any]) -> DemoVenue:
    """The demo keys a simulator offers: its module's ``DEMO``."""
    venue = sys.modules[simulator.__module__].DEMO
    assert isinstance(venue, DemoVenue), f"{simulator.__module__}.DEMO is no DemoVenue"
    return venue


#: Every simulator's demo keys for ``keymon demo`` (its module's ``DEMO``), by exchange name.
DEMO_VENUES: dict[str, DemoVenue] = {name: _demo_venue(sim) for name, sim in SIMULATORS.items()}

__all__ = [
    "ADMIN_PREFIX",
    "API_KEY_HEADER",
    "DEMO_VENUES",
    "SIMULATORS",
    "BiconomySimulator",
    "BinanceSimulator",
    "BingxSimulator",
    "BitgetSimulator",
    "BitmartSimulator",
    "BitrueSimulator",
    "BybitSimulator",
    "CoinbaseSimulator",
    "CoinstoreSimulator",
    "DemoKey",
    "DemoVenue",
    "GateSimulator",
    "Handler",
    "HtxSimulator",
    "KrakenSimulator",
    "KucoinSimulator",
    "LbankSimulator",
    "LoggedRequest",
    "MexcSimulator",
    "OkxSimulator",
    "SimResponse",
    "SimulatorAsyncTransport",
    "SimulatorServer",
    "SimulatorSyncTransport",
    "XtSimulator",
    "serve_in_thread",
    "signed_payload",
    "verify_hmac",
]

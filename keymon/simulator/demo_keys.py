"""The ``keymon demo`` keys a simulator offers: what they are and how they are registered.

Each simulator module offers its own demo keys as ``DEMO``, a :class:`DemoVenue`: the keys
(each in a state an operator should recognise), how one is registered at the simulator, and
what its configuration holds beyond ``api_key``/``api_secret``. :mod:`keymon.demo` collects
them through :data:`keymon.simulator.DEMO_VENUES` and names no exchange itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DAY = 86_400
#: Outside the demo's trusted_ips (TEST-NET-3): what a key bound to a stranger's IP shows.
STRANGER_IP = "203.0.113.7"


@dataclass(frozen=True)
class DemoKey:
    """One demo key: its configured name, what the exchange holds, and what it shows.

    ``state`` holds the keyword arguments of the exchange simulator's ``add_key`` that put the
    key into its state (for Binance: ``restrictions`` and ``ip_whitelist``).
    """

    name: str
    client: str
    exchange: str
    story: str
    state: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False

    def _derive(self, what: str) -> str:
        return hashlib.sha256(f"demo-{what}-{self.name}".encode()).hexdigest()

    @property
    def api_key(self) -> str:
        return self._derive("key")

    @property
    def secret(self) -> str:
        return self._derive("secret")

    @property
    def passphrase(self) -> str:
        return self._derive("passphrase")[:16]

    @property
    def memo(self) -> str:
        return self._derive("memo")[:12]


@dataclass(frozen=True)
class DemoVenue:
    """How the demo registers a key at one exchange's simulator and configures it in keymon."""

    register: Callable[[Any, DemoKey], None]
    #: The demo's keys at this exchange, given the current time (Unix seconds).
    keys: Callable[[float], list[DemoKey]]
    #: Secret key configuration fields beyond api_key/api_secret, written to secret files:
    #: "passphrase" or "memo" (the :class:`DemoKey` property of that name).
    extra: tuple[str, ...] = ()
    #: Plain key configuration fields beyond those (HTX's ``uid``).
    fields: Mapping[str, str] = field(default_factory=dict)
    #: The secret in the form the exchange issues it (Kraken's is base64).
    secret_of: Callable[[DemoKey], str] = lambda key: key.secret
    #: The API key in the form the exchange issues it (Coinbase's is a CDP key name).
    key_of: Callable[[DemoKey], str] = lambda key: key.api_key


def register_plain(simulator: Any, key: DemoKey) -> None:
    """``add_key(api_key, secret, **state)``."""
    simulator.add_key(key.api_key, key.secret, **key.state)


def register_with_passphrase(simulator: Any, key: DemoKey) -> None:
    """``add_key(api_key, secret, passphrase, **state)``."""
    simulator.add_key(key.api_key, key.secret, key.passphrase, **key.state)


def register_liveness(simulator: Any, key: DemoKey, *credentials: str) -> None:
    """A key on a simulator built on LivenessSimulator (the liveness-only exchanges, and XT);
    ``key_state`` (frozen, expired, ...) is set after."""
    state = dict(key.state)
    key_state = state.pop("key_state", None)
    simulator.add_key(key.api_key, key.secret, *credentials, **state)
    if key_state is not None:
        simulator.update_key(key.api_key, state=key_state)

"""The adapter contract: every exchange gives the same findings and reasons for the same facts.

Each exchange has a small venue object that knows how to put its simulator into a state
(withdraw on, IP restriction dropped, key deleted, ...). Every scenario runs against every
adapter, both in-process and served on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import yaml

from keymon.audit import Auditor
from keymon.cli import check
from keymon.config import Settings
from keymon.model import AuditResult, Reason, Rule, Severity
from keymon.simulator.binance import BinanceSimulator
from keymon.simulator.bingx import BingxSimulator
from keymon.simulator.bitget import BitgetSimulator
from keymon.simulator.bybit import BybitSimulator
from keymon.simulator.coinbase import CoinbaseSimulator, new_key_pair
from keymon.simulator.gate import GateSimulator
from keymon.simulator.htx import HtxSimulator
from keymon.simulator.kraken import KrakenSimulator
from keymon.simulator.kucoin import KucoinSimulator, mask
from keymon.simulator.okx import OkxSimulator
from keymon.simulator.xt import XtSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET, SENTINEL, FakeClock

BYBIT_KEY = "bybitContractKey"
BYBIT_SECRET = "bybitContractSecret"
BITGET_KEY = "bg_contractKey"
BITGET_SECRET = "bitgetContractSecret"
BITGET_PASSPHRASE = "bitgetContractPassphrase"
OKX_KEY = "okxContractKey"
OKX_SECRET = "okxContractSecret"
OKX_PASSPHRASE = "okxContractPassphrase"
KUCOIN_KEY = "kucoinContractKey"
KUCOIN_SECRET = "kucoinContractSecret"
KUCOIN_PASSPHRASE = "kucoinContractPassphrase"
HTX_KEY = "htxContractKey"
HTX_SECRET = "htxContractSecret"
HTX_UID = "123456"
GATE_KEY = "gateContractKey0001"
GATE_SECRET = "gateContractSecret"
KRAKEN_KEY = "krakenContractKey"
#: A Kraken private key is base64 of 64 bytes.
KRAKEN_SECRET = base64.b64encode(b"kraken-contract-secret-".ljust(64, b"k")).decode()
BINGX_KEY = "bingxContractKey0001"
BINGX_SECRET = "bingxContractSecret"
COINBASE_KEY = (
    "organizations/6f1c2d3e-0000-4000-8000-00000000c0de/"
    "apiKeys/0b5e7a11-0000-4000-8000-00000000beef"
)
XT_KEY = "xtContractKey01"
XT_SECRET = "xtContractSecret01"
#: Coinbase's secret is an EC P-256 private key; the simulator holds only its public half.
COINBASE_SECRET, COINBASE_PUBLIC = new_key_pair("ES256")
UNTRUSTED = "198.51.100.9"
REFUSED_ONLY = "10.9.9.9"
SENTINEL_B64 = base64.b64encode(SENTINEL.encode()).decode()


class Venue(Protocol):
    """One exchange's simulator and how to put it into each scenario's state."""

    name: str
    api_key: str
    secret: str
    #: Key fields beyond api_key/api_secret (a passphrase, a key version).
    key_extra: dict[str, Any]
    #: How the exchange shows UNTRUSTED in the key's IP list (KuCoin masks it).
    untrusted_shown: str

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process transport onto the simulator."""
        ...

    def serve(self) -> contextlib.AbstractContextManager[str]:
        """Serve the simulator on 127.0.0.1; yields the base URL."""
        ...

    def healthy(self, *, rate_limited: bool = False) -> None:
        """Create the guide's key (optionally with the smallest rate limit)."""
        ...

    def withdraw_on(self) -> None:
        """Switch withdrawals on for the key."""
        ...

    def drop_ip_restriction(self) -> bool:
        """Unbind the key from any IP; False where the exchange does not show the binding."""
        ...

    def untrusted_ip(self) -> bool:
        """Bind an IP outside trusted_ips; False where the exchange does not show IPs."""
        ...

    def expiry_near(self, at: datetime) -> bool:
        """Make the key's deadline ``at``; False where the exchange shows no deadline."""
        ...

    def delete(self) -> None:
        """Delete the key."""
        ...

    def refuse_ip(self) -> None:
        """Bind the key to an IP that is not the client's. Every exchange refuses the call;
        where it does not say why (Coinbase's bare 401), the reason is still key_rejected."""
        ...

    def fail(self, n: int, status: int) -> None:
        """Answer the next ``n`` requests with ``status``."""
        ...

    def garbage(self, n: int) -> None:
        """Truncate the next ``n`` bodies."""
        ...


@dataclass
class SimVenue:
    """What every venue does alike: reach its simulator, delete the key, inject faults."""

    clock: FakeClock
    api_key: str = field(init=False)
    sim: Any = field(init=False)

    def transport(self) -> httpx.AsyncBaseTransport:
        return self.sim.transport()  # type: ignore[no-any-return]

    def serve(self) -> contextlib.AbstractContextManager[str]:
        return self.sim.serve_in_thread()  # type: ignore[no-any-return]

    def delete(self) -> None:
        self.sim.delete_key(self.api_key)

    def fail(self, n: int, status: int) -> None:
        self.sim.fail_next(n, status)

    def garbage(self, n: int) -> None:
        self.sim.truncate_next(n)


@dataclass
class BinanceVenue(SimVenue):
    """Binance: apiRestrictions flags; no visible IP list."""

    name: str = "binance"
    api_key: str = DOC_API_KEY
    secret: str = DOC_SECRET
    key_extra: dict[str, Any] = field(default_factory=dict)
    untrusted_shown: str = UNTRUSTED
    sim: BinanceSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = BinanceSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:
            self.sim = BinanceSimulator(clock=self.clock, sapi_ip_weight_limit=1)
        self.sim.add_key(self.api_key, hmac_secret=self.secret)

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, enableWithdrawals=True)

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ipRestrict=False)
        return True

    def untrusted_ip(self) -> bool:
        return False  # Binance does not show a key its IP list

    def expiry_near(self, at: datetime) -> bool:
        # Binance's only deadline: trading authority, on a key without IP restriction.
        self.sim.update_key(
            self.api_key,
            ipRestrict=False,
            tradingAuthorityExpirationTime=int(at.timestamp() * 1000),
        )
        return True

    def refuse_ip(self) -> None:
        self.sim.set_ip_whitelist(self.api_key, [REFUSED_ONLY])


@dataclass
class BybitVenue(SimVenue):
    """Bybit: grouped permissions, a visible IP list, key_expiry for unbound keys."""

    name: str = "bybit"
    api_key: str = BYBIT_KEY
    secret: str = BYBIT_SECRET
    key_extra: dict[str, Any] = field(default_factory=dict)
    untrusted_shown: str = UNTRUSTED
    sim: BybitSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = BybitSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:
            self.sim.set_key_limit(1)
        self.sim.add_key(self.api_key, self.secret, ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, permissions={"Wallet": ["Withdraw"]})

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=["*"])
        return True

    def untrusted_ip(self) -> bool:
        self.sim.update_key(self.api_key, ips=["127.0.0.1", UNTRUSTED])
        return True

    def expiry_near(self, at: datetime) -> bool:
        self.sim.update_key(self.api_key, ips=["*"], expired_at=at.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return True

    def refuse_ip(self) -> None:
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])


@dataclass
class KucoinVenue(SimVenue):
    """KuCoin: a comma-separated permission list, a masked IP list, no deadline."""

    name: str = "kucoin"
    api_key: str = KUCOIN_KEY
    secret: str = KUCOIN_SECRET
    key_extra: dict[str, Any] = field(
        default_factory=lambda: {"passphrase": KUCOIN_PASSPHRASE, "key_version": 3}
    )
    untrusted_shown: str = mask(UNTRUSTED)
    sim: KucoinSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = KucoinSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:  # room for one key-info call (weight 20) per window
            self.sim = KucoinSimulator(clock=self.clock, pool_limit=20)
        self.sim.add_key(self.api_key, self.secret, KUCOIN_PASSPHRASE, ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, permissions=["General", "Spot", "Transfer"])

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=[])
        return True

    def untrusted_ip(self) -> bool:
        self.sim.update_key(self.api_key, ips=["127.0.0.1", UNTRUSTED])
        return True

    def expiry_near(self, at: datetime) -> bool:
        return False  # KuCoin shows a key no expiry

    def refuse_ip(self) -> None:
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])


@dataclass
class BitgetVenue(SimVenue):
    """Bitget: authority codes, an IP whitelist string, a passphrase; no key expiry."""

    name: str = "bitget"
    api_key: str = BITGET_KEY
    secret: str = BITGET_SECRET
    key_extra: dict[str, Any] = field(default_factory=lambda: {"passphrase": BITGET_PASSPHRASE})
    untrusted_shown: str = UNTRUSTED
    sim: BitgetSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = BitgetSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        # Bitget's documented limit (1/s) is already the smallest: rate_limited changes nothing.
        self.sim.add_key(self.api_key, self.secret, BITGET_PASSPHRASE, ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, authorities=["stor", "stow", "wwow"])

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=[])
        return True

    def untrusted_ip(self) -> bool:
        self.sim.update_key(self.api_key, ips=["127.0.0.1", UNTRUSTED])
        return True

    def expiry_near(self, at: datetime) -> bool:
        return False  # Bitget shows a key no expiry

    def refuse_ip(self) -> None:
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])


@dataclass
class GateVenue(SimVenue):
    """Gate: perms from the key's masked main_keys entry, an ip_whitelist array; no expiry."""

    name: str = "gate"
    api_key: str = GATE_KEY
    secret: str = GATE_SECRET
    key_extra: dict[str, Any] = field(default_factory=dict)
    untrusted_shown: str = UNTRUSTED
    sim: GateSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = GateSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:
            self.sim.set_limit(1)
        self.sim.add_key(self.api_key, self.secret, perms=[("spot", False)], ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, perms=[("spot", False), ("wallet", False)])

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=[])
        return True

    def untrusted_ip(self) -> bool:
        self.sim.update_key(self.api_key, ips=["127.0.0.1", UNTRUSTED])
        return True

    def expiry_near(self, at: datetime) -> bool:
        return False  # Gate shows a key no expiry

    def refuse_ip(self) -> None:
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])


@dataclass
class OkxVenue(SimVenue):
    """OKX: perm and a visible IP list; a passphrase; no expiry or creation time."""

    name: str = "okx"
    api_key: str = OKX_KEY
    secret: str = OKX_SECRET
    key_extra: dict[str, Any] = field(default_factory=lambda: {"passphrase": OKX_PASSPHRASE})
    untrusted_shown: str = UNTRUSTED
    sim: OkxSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = OkxSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:
            self.sim.set_limit(1)
        self.sim.add_key(self.api_key, self.secret, OKX_PASSPHRASE, ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, perm=["read_only", "trade", "withdraw"])

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=[])
        return True

    def untrusted_ip(self) -> bool:
        self.sim.update_key(self.api_key, ips=["127.0.0.1", UNTRUSTED])
        return True

    def expiry_near(self, at: datetime) -> bool:
        return False  # OKX shows a key no expiry (its 14-day idle expiry is not a field)

    def refuse_ip(self) -> None:
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])


@dataclass
class HtxVenue(SimVenue):
    """HTX: a permission string and an IP string, a uid; validDays is no deadline."""

    name: str = "htx"
    api_key: str = HTX_KEY
    secret: str = HTX_SECRET
    key_extra: dict[str, Any] = field(default_factory=lambda: {"uid": HTX_UID})
    untrusted_shown: str = UNTRUSTED
    sim: HtxSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = HtxSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:
            self.sim.set_limit(1)
        self.sim.add_key(self.api_key, self.secret, HTX_UID, ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, permission=["readOnly", "trade", "withdraw"])

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=[])
        return True

    def untrusted_ip(self) -> bool:
        self.sim.update_key(self.api_key, ips=["127.0.0.1", UNTRUSTED])
        return True

    def expiry_near(self, at: datetime) -> bool:
        return False  # validDays is kept raw: its meaning is unconfirmed

    def refuse_ip(self) -> None:
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])


@dataclass
class KrakenVenue(SimVenue):
    """Kraken: permission strings, an ipAllowlist array, validUntil; nonces, no clock window."""

    name: str = "kraken"
    api_key: str = KRAKEN_KEY
    secret: str = KRAKEN_SECRET
    key_extra: dict[str, Any] = field(default_factory=dict)
    untrusted_shown: str = UNTRUSTED
    sim: KrakenSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = KrakenSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:  # the key's call counter holds a single call
            self.sim.set_limit(1)
        self.sim.add_key(self.api_key, self.secret, ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(
            self.api_key,
            permissions=["query-funds", "query-open-trades", "modify-trades", "withdraw-funds"],
        )

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=[])
        return True

    def untrusted_ip(self) -> bool:
        self.sim.update_key(self.api_key, ips=["127.0.0.1", UNTRUSTED])
        return True

    def expiry_near(self, at: datetime) -> bool:
        self.sim.update_key(self.api_key, valid_until=int(at.timestamp()))
        return True

    def refuse_ip(self) -> None:
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])

    def nonce_ahead(self) -> None:
        """The key's bots sign microsecond nonces: every millisecond nonce is too small."""
        self.sim.use_nonce(self.api_key, int(self.clock.now * 1_000_000))


@dataclass
class BingxVenue(SimVenue):
    """BingX: permission codes and an IP list from apiPermissions; no expiry shown."""

    name: str = "bingx"
    api_key: str = BINGX_KEY
    secret: str = BINGX_SECRET
    key_extra: dict[str, Any] = field(default_factory=dict)
    untrusted_shown: str = UNTRUSTED
    sim: BingxSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = BingxSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:
            self.sim.set_limit(1)
        self.sim.add_key(self.api_key, self.secret, permissions=[1, 2], ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, permissions=[1, 2, 5])

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=[])
        return True

    def untrusted_ip(self) -> bool:
        self.sim.update_key(self.api_key, ips=["127.0.0.1", UNTRUSTED])
        return True

    def expiry_near(self, at: datetime) -> bool:
        return False  # BingX shows no expiry (its 14-day idle deletion of unbound keys has no date)

    def refuse_ip(self) -> None:
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])


@dataclass
class CoinbaseVenue(SimVenue):
    """Coinbase: can_view/can_trade/can_transfer only; IP allowlist and expiry not shown; a
    bare 401 for every refusal (deleted key, wrong private key, refused IP, bad JWT time)."""

    name: str = "coinbase"
    api_key: str = COINBASE_KEY
    secret: str = COINBASE_SECRET
    key_extra: dict[str, Any] = field(default_factory=dict)
    untrusted_shown: str = UNTRUSTED
    sim: CoinbaseSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = CoinbaseSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:
            self.sim.set_limit(1)
        self.sim.add_key(self.api_key, COINBASE_PUBLIC, ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, can_transfer=True)

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=[])
        return False  # Coinbase does not show a key its IP allowlist

    def untrusted_ip(self) -> bool:
        return False  # nor the addresses in it

    def expiry_near(self, at: datetime) -> bool:
        return False  # Coinbase shows a key no expiry

    def refuse_ip(self) -> None:
        # Coinbase answers the same bare 401 as for a deleted key: key_rejected, cause unknown.
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])


@dataclass
class XtVenue(SimVenue):
    """XT: roleScopes and bindIps from the user-center API (the account's keys, secrets
    included, of which keymon keeps the calling key's entry without its secret); no expiry."""

    name: str = "xt"
    api_key: str = XT_KEY
    secret: str = XT_SECRET
    key_extra: dict[str, Any] = field(default_factory=dict)
    untrusted_shown: str = UNTRUSTED
    sim: XtSimulator = field(init=False)

    def __post_init__(self) -> None:
        self.sim = XtSimulator(clock=self.clock)

    def healthy(self, *, rate_limited: bool = False) -> None:
        if rate_limited:
            self.sim.set_rate_limit(1, 60)
        self.sim.add_key(self.api_key, self.secret, ips=["127.0.0.1"])

    def withdraw_on(self) -> None:
        self.sim.update_key(self.api_key, role_scopes=["QUERY", "TRADE", "WITHDRAW"])

    def drop_ip_restriction(self) -> bool:
        self.sim.update_key(self.api_key, ips=[])
        return True

    def untrusted_ip(self) -> bool:
        self.sim.update_key(self.api_key, ips=["127.0.0.1", UNTRUSTED])
        return True

    def expiry_near(self, at: datetime) -> bool:
        return False  # XT shows a key no expiry

    def refuse_ip(self) -> None:
        self.sim.update_key(self.api_key, ips=[REFUSED_ONLY])


VENUES: dict[str, Callable[[FakeClock], Venue]] = {
    "binance": BinanceVenue,
    "bybit": BybitVenue,
    "okx": OkxVenue,
    "kucoin": KucoinVenue,
    "bitget": BitgetVenue,
    "htx": HtxVenue,
    "gate": GateVenue,
    "kraken": KrakenVenue,
    "bingx": BingxVenue,
    "coinbase": CoinbaseVenue,
    "xt": XtVenue,
}


@dataclass
class Harness:
    """A venue reached one way (in-process or served), with settings pointing at it."""

    venue: Venue
    served: bool
    clock: FakeClock
    stack: contextlib.ExitStack

    def settings(self, **overrides: Any) -> tuple[Settings, Callable[[str], Any] | None]:
        """Settings with the venue's one key; and the transport factory to use."""
        if self.served:
            base_url = self.stack.enter_context(self.venue.serve())
            factory = None
        else:
            base_url = f"https://{self.venue.name}.test"
            transport = self.venue.transport()

            def factory(name: str) -> httpx.AsyncBaseTransport | None:
                return transport if name == self.venue.name else None

        key = {
            "name": "contract-key",
            "client": "acme",
            "exchange": self.venue.name,
            "api_key": self.venue.api_key,
            "api_secret": self.venue.secret,
            **self.venue.key_extra,
        }
        data: dict[str, Any] = {
            "keys": [key],
            "exchanges": {self.venue.name: {"base_url": base_url}},
            "trusted_ips": ["127.0.0.1/32"],
            **overrides,
        }
        return Settings(**data), factory

    async def audit(self, times: int = 1, clock: Callable[[], float] | None = None) -> AuditResult:
        """Audit the key ``times`` times with one auditor; the last result."""
        settings, factory = self.settings()
        async with Auditor(
            settings, transport_factory=factory, clock=clock or self.clock
        ) as auditor:
            result = None
            for _ in range(times):
                result = await auditor.audit(settings.keys[0])
        assert result is not None
        return result


@pytest.fixture(params=list(VENUES))
def venue_name(request: pytest.FixtureRequest) -> str:
    """Each exchange in turn."""
    return str(request.param)


@pytest.fixture(params=["in-process", "served"])
def harness(request: pytest.FixtureRequest, venue_name: str, clock: FakeClock) -> Iterator[Harness]:
    """Each exchange reached both ways."""
    with contextlib.ExitStack() as stack:
        yield Harness(VENUES[venue_name](clock), request.param == "served", clock, stack)


def fired(result: AuditResult) -> set[tuple[str, str]]:
    """(rule, severity) of every finding."""
    return {(str(f.rule), str(f.severity)) for f in result.findings}


def reason(result: AuditResult) -> Reason | None:
    """The failed audit's reason, or None."""
    return result.error.reason if result.error is not None else None


# ----------------------------------------------------------------------------- findings


async def test_healthy_key_has_no_findings(harness: Harness) -> None:
    """The guide's key audits cleanly on every exchange."""
    harness.venue.healthy()
    result = await harness.audit()
    assert result.ok, result.error
    assert result.findings == ()
    assert result.facts is not None
    assert result.facts.permissions["read"] is True
    assert result.facts.permissions["spot_trade"] is True
    assert result.facts.permissions["withdraw"] is False


async def test_withdraw_on_is_critical(harness: Harness) -> None:
    """Withdrawals switched on fire withdraw_enabled, critical."""
    harness.venue.healthy()
    harness.venue.withdraw_on()
    assert (Rule.WITHDRAW_ENABLED, Severity.CRITICAL) in fired(await harness.audit())


async def test_dropped_ip_restriction_fires(harness: Harness) -> None:
    """A key bound to no IP fires ip_unrestricted where the exchange shows the binding; where
    it does not, the rule is not evaluated (no finding, no check), never passed."""
    harness.venue.healthy()
    visible = harness.venue.drop_ip_restriction()
    result = await harness.audit()
    rules = {rule for rule, _ in fired(result)}
    if not visible:
        assert result.facts is not None
        assert result.facts.ip_restricted is None
        assert Rule.IP_UNRESTRICTED not in rules
        assert Rule.IP_UNRESTRICTED not in {check.rule for check in result.evaluation.checks}
        return
    assert Rule.IP_UNRESTRICTED in rules


async def test_untrusted_ip_fires_where_visible(harness: Harness) -> None:
    """An IP outside trusted_ips fires untrusted_ip where the exchange shows the IP list."""
    harness.venue.healthy()
    if not harness.venue.untrusted_ip():
        pytest.skip(f"{harness.venue.name} does not show a key its IP list")
    result = await harness.audit()
    assert Rule.UNTRUSTED_IP in {rule for rule, _ in fired(result)}
    assert result.facts is not None
    assert result.facts.ip_list is not None
    assert harness.venue.untrusted_shown in result.facts.ip_list


async def test_near_deadline_is_critical(harness: Harness) -> None:
    """A deadline two days out fires review_deadline, critical (inside the 3-day window)."""
    harness.venue.healthy()
    at = datetime.fromtimestamp(harness.clock.now, UTC) + timedelta(days=2)
    if not harness.venue.expiry_near(at):
        pytest.skip(f"{harness.venue.name} shows a key no deadline")
    result = await harness.audit()
    assert (Rule.REVIEW_DEADLINE, Severity.CRITICAL) in fired(result)
    assert result.facts is not None
    assert result.facts.deadlines


# ----------------------------------------------------------------------------- reasons


async def test_deleted_key_is_key_rejected(harness: Harness) -> None:
    """A deleted key fails with key_rejected."""
    harness.venue.healthy()
    harness.venue.delete()
    assert reason(await harness.audit()) is Reason.KEY_REJECTED


async def test_refused_ip_is_key_rejected(harness: Harness) -> None:
    """A key bound to another IP fails with key_rejected, and the message names the IP as the
    cause, or as a possible one where the exchange does not say (Coinbase's bare 401)."""
    harness.venue.healthy()
    harness.venue.refuse_ip()
    result = await harness.audit()
    assert reason(result) is Reason.KEY_REJECTED
    assert result.error is not None
    assert re.search(r"\bIP\b", result.error.message), result.error.message


class JumpyClock:
    """A clock that runs 100 s per reading: no re-sync can keep up with it, whatever the
    exchange's timestamp window (Bitget's is 30 s either side)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 100
        return self.now


async def test_persistent_skew_is_clock_skew(harness: Harness) -> None:
    """When a re-sync does not help, the audit fails with clock_skew."""
    if harness.venue.name == "htx":
        pytest.skip(
            "HTX: §2.15 names no timestamp error or server-time endpoint; the adapter does not"
            " sync, so a stale stamp is api-signature-not-valid (key_rejected)"
        )
    if isinstance(harness.venue, KrakenVenue):
        # Kraken has no clock window: its clock-like failure is a nonce the key has already
        # passed (bots on a larger nonce scale), which keymon's one retry cannot cure.
        harness.venue.healthy()
        harness.venue.nonce_ahead()
        result = await harness.audit()
        assert reason(result) is Reason.CLOCK_SKEW
        assert result.error is not None
        assert result.error.code == "EAPI:Invalid nonce"
        return
    harness.venue.healthy()
    result = await harness.audit(clock=JumpyClock(harness.clock.now))
    assert reason(result) is Reason.CLOCK_SKEW


async def test_rate_limit_is_rate_limited(harness: Harness) -> None:
    """Past the exchange's limit, the audit fails with rate_limited."""
    harness.venue.healthy(rate_limited=True)
    assert reason(await harness.audit(times=2)) is Reason.RATE_LIMITED


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_exchange_unavailable(harness: Harness, status: int) -> None:
    """A 5xx answer (time sync and audit both) is exchange_unavailable."""
    harness.venue.healthy()
    harness.venue.fail(5, status)
    assert reason(await harness.audit()) is Reason.EXCHANGE_UNAVAILABLE


async def test_garbage_is_bad_response(harness: Harness) -> None:
    """A truncated body is bad_response."""
    harness.venue.healthy()
    harness.venue.garbage(5)
    assert reason(await harness.audit()) is Reason.BAD_RESPONSE


async def test_no_httpx_error_or_secret_escapes(harness: Harness) -> None:
    """Every failure returns an AuditResult whose message carries no secret and no URL."""
    venue = harness.venue
    venue.healthy()
    settings, factory = harness.settings()
    async with Auditor(settings, transport_factory=factory, clock=harness.clock) as auditor:
        results = []
        for fault in ("fail", "garbage", "delete"):
            if fault == "fail":
                venue.fail(5, 500)
            elif fault == "garbage":
                venue.garbage(5)
            else:
                venue.delete()
            results.append(await auditor.audit(settings.keys[0]))
    for result in results:
        assert result.error is not None
        text = json.dumps([result.error.message, str(result.error.code)])
        assert venue.secret not in text
        assert "http://" not in text


class BrokenTransport(httpx.AsyncBaseTransport):
    """A transport whose every request fails with one httpx error."""

    def __init__(self, error: httpx.HTTPError) -> None:
        self._error = error

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise self._error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("refused"), Reason.NETWORK),
        (httpx.ReadTimeout("slow"), Reason.TIMEOUT),
        (httpx.RemoteProtocolError("garbled"), Reason.NETWORK),
    ],
    ids=["connect", "timeout", "protocol"],
)
async def test_httpx_errors_become_reasons(
    venue_name: str, clock: FakeClock, error: httpx.HTTPError, expected: Reason
) -> None:
    """No adapter lets an httpx error out: each becomes an audit error with a reason."""
    venue = VENUES[venue_name](clock)
    # Where any string is a secret, the sentinel; where the secret must be key material, a
    # usable form of it (Kraken: the sentinel in base64; Coinbase: the venue's private key).
    secret = {"kraken": SENTINEL_B64, "coinbase": venue.secret}.get(venue_name, SENTINEL)
    key = {
        "name": "k",
        "client": "acme",
        "exchange": venue_name,
        "api_key": venue.api_key,
        "api_secret": secret,
        **venue.key_extra,
    }
    settings = Settings(keys=[key], trusted_ips=["127.0.0.1/32"])
    async with Auditor(settings, transport_factory=lambda _n: BrokenTransport(error)) as auditor:
        result = await auditor.audit(settings.keys[0])
    assert reason(result) is expected
    assert result.error is not None
    assert SENTINEL not in result.error.message
    assert secret not in result.error.message


# ----------------------------------------------------------------------------- policy


async def test_bybit_unified_account_default_derivatives_is_a_warning(clock: FakeClock) -> None:
    """A UTA key's default DerivativesTrade is a futures_trade warning under market-maker."""
    venue = BybitVenue(clock)
    venue.sim.add_key(venue.api_key, venue.secret, uta=True)
    with contextlib.ExitStack() as stack:
        result = await Harness(venue, False, clock, stack).audit()
    assert result.facts is not None
    assert result.facts.permissions["futures_trade"] is True
    assert fired(result) == {(Rule.FORBIDDEN_PERMISSION, Severity.WARNING)}
    assert result.findings[0].permission == "futures_trade"


# ----------------------------------------------------------------------------- keymon check


def test_check_mixes_exchanges(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keymon check` audits a key on each of the ten exchanges in one run, each on its own."""
    binance = BinanceSimulator()
    binance.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    bybit = BybitSimulator()
    bybit.add_key(BYBIT_KEY, BYBIT_SECRET)
    bybit.update_key(BYBIT_KEY, permissions={"Wallet": ["Withdraw"]})
    config = {
        "exchanges": {
            "binance": {"base_url": "https://binance.test"},
            "bybit": {"base_url": "https://bybit.test"},
        },
        "trusted_ips": ["127.0.0.1/32"],
        "keys": [
            {
                "name": "acme-binance",
                "client": "acme",
                "exchange": "binance",
                "api_key": DOC_API_KEY,
                "api_secret": DOC_SECRET,
            },
            {
                "name": "acme-bybit",
                "client": "acme",
                "exchange": "bybit",
                "api_key": BYBIT_KEY,
                "api_secret": BYBIT_SECRET,
            },
            {
                "name": "acme-okx",
                "client": "acme",
                "exchange": "okx",
                "api_key": OKX_KEY,
                "api_secret": OKX_SECRET,
                "passphrase": OKX_PASSPHRASE,
            },
            {
                "name": "acme-bitget",
                "client": "acme",
                "exchange": "bitget",
                "api_key": BITGET_KEY,
                "api_secret": BITGET_SECRET,
                "passphrase": BITGET_PASSPHRASE,
            },
            {
                "name": "acme-kucoin",
                "client": "acme",
                "exchange": "kucoin",
                "api_key": KUCOIN_KEY,
                "api_secret": KUCOIN_SECRET,
                "passphrase": KUCOIN_PASSPHRASE,
            },
            {
                "name": "acme-htx",
                "client": "acme",
                "exchange": "htx",
                "api_key": HTX_KEY,
                "api_secret": HTX_SECRET,
                "uid": HTX_UID,
            },
            {
                "name": "acme-gate",
                "client": "acme",
                "exchange": "gate",
                "api_key": GATE_KEY,
                "api_secret": GATE_SECRET,
            },
            {
                "name": "acme-kraken",
                "client": "acme",
                "exchange": "kraken",
                "api_key": KRAKEN_KEY,
                "api_secret": KRAKEN_SECRET,
            },
            {
                "name": "acme-bingx",
                "client": "acme",
                "exchange": "bingx",
                "api_key": BINGX_KEY,
                "api_secret": BINGX_SECRET,
            },
            {
                "name": "acme-coinbase",
                "client": "acme",
                "exchange": "coinbase",
                "api_key": COINBASE_KEY,
                "api_secret": COINBASE_SECRET,
            },
        ],
    }
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    okx = OkxSimulator()
    okx.add_key(OKX_KEY, OKX_SECRET, OKX_PASSPHRASE)
    bitget = BitgetSimulator()
    bitget.add_key(BITGET_KEY, BITGET_SECRET, BITGET_PASSPHRASE)
    kucoin = KucoinSimulator()
    kucoin.add_key(KUCOIN_KEY, KUCOIN_SECRET, KUCOIN_PASSPHRASE)
    htx = HtxSimulator()
    htx.add_key(HTX_KEY, HTX_SECRET, HTX_UID)
    gate = GateSimulator()
    gate.add_key(GATE_KEY, GATE_SECRET)
    kraken = KrakenSimulator()
    kraken.add_key(KRAKEN_KEY, KRAKEN_SECRET, valid_until=int(time.time()) + 90 * 86400)
    bingx = BingxSimulator()
    bingx.add_key(BINGX_KEY, BINGX_SECRET)
    coinbase = CoinbaseSimulator()
    coinbase.add_key(COINBASE_KEY, COINBASE_PUBLIC)
    transports = {
        "bingx": bingx.transport(),
        "kraken": kraken.transport(),
        "htx": htx.transport(),
        "gate": gate.transport(),
        "coinbase": coinbase.transport(),
        "binance": binance.transport(),
        "bybit": bybit.transport(),
        "kucoin": kucoin.transport(),
        "bitget": bitget.transport(),
        "okx": okx.transport(),
    }
    status = check(path, fmt="json", transport_factory=transports.get)
    out, _ = capsys.readouterr()
    assert status == 2  # the Bybit key can withdraw
    assert BYBIT_SECRET not in out
    assert DOC_SECRET not in out
    report = json.loads(out)
    assert "acme-binance" in out
    assert "acme-bybit" in out
    assert "acme-kucoin" in out
    assert "acme-bitget" in out
    assert "acme-okx" in out
    assert "acme-htx" in out
    assert HTX_SECRET not in out
    assert "acme-gate" in out
    assert GATE_SECRET not in out
    assert "acme-bingx" in out
    assert BINGX_SECRET not in out
    row = next(k for k in report["keys"] if k["key"] == "acme-kraken")
    assert row["audit_ok"] is True  # the simulator checked signature and nonce
    assert row["facts"]["ip_list"] == ["127.0.0.1"]
    assert row["facts"]["permissions"]["withdraw"] is False
    assert [d["kind"] for d in row["facts"]["deadlines"]] == ["key_expiry"]
    assert row["findings"] == []
    assert KRAKEN_SECRET not in out
    row = next(k for k in report["keys"] if k["key"] == "acme-coinbase")
    assert row["audit_ok"] is True  # the simulator verified the JWT with the public key
    assert row["facts"]["permissions"] == {"read": True, "spot_trade": True, "withdraw": False}
    assert row["facts"]["ip_restricted"] is None  # not visible: not evaluated, not passed
    assert row["facts"]["ip_list"] is None
    assert row["findings"] == []
    assert COINBASE_KEY not in out
    assert all(line not in out for line in COINBASE_SECRET.splitlines()[1:-1])
    assert OKX_SECRET not in out
    assert OKX_PASSPHRASE not in out
    assert BITGET_SECRET not in out
    assert BITGET_PASSPHRASE not in out
    assert KUCOIN_SECRET not in out
    assert KUCOIN_PASSPHRASE not in out
    assert "withdraw_enabled" in json.dumps(report)

"""The liveness contract: exchanges that show a key nothing about itself.

For MEXC, BitMart, Bitrue, LBank, Coinstore and Biconomy keymon can vouch only that a key
is accepted from this egress IP. Every scenario here runs against every liveness adapter and
its simulator, in-process and served on 127.0.0.1: an accepted key has every fact "not
visible" and no permission, IP or deadline rule evaluated (in the audit, in ``keymon check``
and in the metrics); a deleted key, a wrong secret, a refused IP, a frozen or expired key, clock
skew, a rate limit, an exchange down and a garbage answer each give their own reason.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from keymon.app import App
from keymon.audit import Auditor
from keymon.cli import check
from keymon.config import Settings, load
from keymon.model import AuditResult, Coverage, Reason, Rule
from keymon.simulator.biconomy import BiconomySimulator
from keymon.simulator.binance import BinanceSimulator
from keymon.simulator.bitmart import BitmartSimulator
from keymon.simulator.bitrue import BitrueSimulator
from keymon.simulator.coinstore import CoinstoreSimulator
from keymon.simulator.lbank import LbankSimulator
from keymon.simulator.liveness import LivenessSimulator
from keymon.simulator.mexc import MexcSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET, SENTINEL, FakeClock
from tests.exchanges.test_contract import BrokenTransport, JumpyClock

#: The address a refused key is bound to instead of the client's (127.0.0.1).
REFUSED_ONLY = "10.9.9.9"
#: The only rules a liveness audit may evaluate: the key's acceptance and the audit's health.
LIVENESS_RULES = frozenset({Rule.KEY_REJECTED, Rule.AUDIT_FAILING})


@dataclass
class LivenessVenue:
    """One liveness exchange: its simulator, its key, and what its answers can tell apart."""

    name: str
    make: Callable[[FakeClock], LivenessSimulator]
    api_key: str
    secret: str
    #: Key configuration fields beyond api_key/api_secret (BitMart's memo).
    key_extra: dict[str, Any] = field(default_factory=dict)
    #: Positional add_key credentials after api_key and secret (BitMart's memo).
    add_args: tuple[str, ...] = ()
    #: Whether a refusal for a disallowed IP names the refused address.
    names_refused_ip: bool = True
    #: Key states the exchange has its own answer for, and a word that answer's message holds.
    states: dict[str, str] = field(default_factory=dict)
    #: Why a clock-skew scenario cannot be told apart, or None if it can.
    no_clock_error: str | None = None


VENUES: dict[str, LivenessVenue] = {
    venue.name: venue
    for venue in (
        LivenessVenue("mexc", lambda c: MexcSimulator(clock=c), "mx0contractKey01", "mexcSecret01"),
        LivenessVenue(
            "bitmart",
            lambda c: BitmartSimulator(clock=c),
            "bmContractKey01",
            "bitmartSecret01",
            key_extra={"memo": "bitmartMemo01"},
            add_args=("bitmartMemo01",),
            names_refused_ip=False,
            states={"frozen": "frozen", "expired": "expir", "disabled": "forbidden"},
        ),
        # Bitrue's "Ip limit" names no IP; its -1022 covers every unusable key state.
        LivenessVenue(
            "bitrue",
            lambda c: BitrueSimulator(clock=c),
            "btrContractKey01",
            "bitrueSecret01",
            names_refused_ip=False,
        ),
        # LBank documents no code for a refused IP (its 10022 names none) nor for key states.
        LivenessVenue(
            "lbank",
            lambda c: LbankSimulator(clock=c),
            "lbk-contract-key-01",
            "lbankSecret01",
            names_refused_ip=False,
        ),
        LivenessVenue(
            "coinstore",
            lambda c: CoinstoreSimulator(clock=c),
            "cs0contractKey01",
            "coinstoreSecret01",
            # 1401 "Unauthorized" covers an unbound IP without naming it.
            names_refused_ip=False,
            no_clock_error=(
                "Coinstore documents no window for X-CS-EXPIRES nor an answer to a stale one, "
                "and no server time to compare with: keymon cannot report its clock skew"
            ),
        ),
        LivenessVenue(
            "biconomy",
            lambda c: BiconomySimulator(clock=c),
            "bc0contractKey01",
            "biconomySecret01",
            # Biconomy documents no code for a refused IP: the answer names nothing.
            names_refused_ip=False,
            no_clock_error="Biconomy signs no timestamp: there is no clock window to miss",
        ),
    )
}


@dataclass
class Harness:
    venue: LivenessVenue
    sim: LivenessSimulator
    served: bool
    clock: FakeClock
    stack: contextlib.ExitStack

    def add_key(self) -> None:
        self.sim.add_key(self.venue.api_key, self.venue.secret, *self.venue.add_args)

    def key_config(self, name: str = "contract-key", secret: str | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "client": "acme",
            "exchange": self.venue.name,
            "api_key": self.venue.api_key,
            "api_secret": secret or self.venue.secret,
            **self.venue.key_extra,
        }

    def settings(self, **keyargs: Any) -> tuple[Settings, Callable[[str], Any] | None]:
        if self.served:
            base_url = self.stack.enter_context(self.sim.serve_in_thread())
            factory = None
        else:
            base_url = f"https://{self.venue.name}.test"
            transport = self.sim.transport()

            def factory(name: str) -> httpx.AsyncBaseTransport | None:
                return transport if name == self.venue.name else None

        settings = Settings(
            keys=[self.key_config(**keyargs)],
            exchanges={self.venue.name: {"base_url": base_url}},
            trusted_ips=["127.0.0.1/32"],
        )
        return settings, factory

    async def audit(
        self, times: int = 1, clock: Callable[[], float] | None = None, **keyargs: Any
    ) -> AuditResult:
        settings, factory = self.settings(**keyargs)
        async with Auditor(
            settings, transport_factory=factory, clock=clock or self.clock
        ) as auditor:
            result = None
            for _ in range(times):
                result = await auditor.audit(settings.keys[0])
        assert result is not None
        return result


@pytest.fixture(params=list(VENUES))
def venue(request: pytest.FixtureRequest) -> LivenessVenue:
    return VENUES[str(request.param)]


@pytest.fixture(params=["in-process", "served"])
def harness(
    request: pytest.FixtureRequest, venue: LivenessVenue, clock: FakeClock
) -> Iterator[Harness]:
    with contextlib.ExitStack() as stack:
        yield Harness(venue, venue.make(clock), request.param == "served", clock, stack)


def reason(result: AuditResult) -> Reason | None:
    return result.error.reason if result.error is not None else None


# ----------------------------------------------------------------------------- accepted


async def test_accepted_key_shows_nothing_but_liveness(harness: Harness) -> None:
    """An accepted key: coverage liveness, every fact not visible, no rule but liveness's."""
    harness.add_key()
    result = await harness.audit()
    assert result.ok, result.error
    assert result.findings == ()
    facts = result.facts
    assert facts is not None
    assert facts.coverage is Coverage.LIVENESS
    assert dict(facts.permissions) == {}
    assert facts.ip_restricted is None
    assert facts.ip_list is None
    assert facts.created_at is None
    assert facts.deadlines == ()
    assert {check.rule for check in result.evaluation.checks} <= LIVENESS_RULES


async def test_unbound_key_still_shows_no_ip_fact(harness: Harness) -> None:
    """A key with no IP binding is accepted too, and keymon still claims nothing about IPs."""
    harness.add_key()
    harness.sim.update_key(harness.venue.api_key, ips=[])
    result = await harness.audit()
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.ip_restricted is None
    assert {check.rule for check in result.evaluation.checks} <= LIVENESS_RULES


# ----------------------------------------------------------------------------- refusals


async def test_deleted_key_is_key_rejected(harness: Harness) -> None:
    harness.add_key()
    harness.sim.delete_key(harness.venue.api_key)
    result = await harness.audit()
    assert reason(result) is Reason.KEY_REJECTED
    assert [f.rule for f in result.findings] == [Rule.KEY_REJECTED]


async def test_wrong_secret_is_key_rejected(harness: Harness) -> None:
    harness.add_key()
    result = await harness.audit(secret="notTheSecret0000")
    assert reason(result) is Reason.KEY_REJECTED
    assert result.error is not None
    assert "notTheSecret0000" not in result.error.message


async def test_refused_ip_is_key_rejected_and_named(harness: Harness) -> None:
    """A key bound to another IP: key_rejected, naming this egress IP where the exchange does."""
    harness.add_key()
    harness.sim.update_key(harness.venue.api_key, ips=[REFUSED_ONLY])
    result = await harness.audit()
    assert reason(result) is Reason.KEY_REJECTED
    assert result.error is not None
    if harness.venue.names_refused_ip:
        assert result.error.refused_ip == "127.0.0.1"
        assert "127.0.0.1" in result.findings[0].message


@pytest.mark.parametrize("state", ["frozen", "expired", "disabled"])
async def test_unusable_key_states_are_key_rejected(harness: Harness, state: str) -> None:
    """A frozen, expired or disabled key is rejected; where the exchange says which, so does
    keymon's message."""
    harness.add_key()
    harness.sim.update_key(harness.venue.api_key, state=state)
    result = await harness.audit()
    assert reason(result) is Reason.KEY_REJECTED
    word = harness.venue.states.get(state)
    if word is not None:
        assert result.error is not None
        assert word in result.error.message


async def test_persistent_skew_is_clock_skew(harness: Harness) -> None:
    if harness.venue.no_clock_error:
        pytest.skip(harness.venue.no_clock_error)
    harness.add_key()
    result = await harness.audit(clock=JumpyClock(harness.clock.now))
    assert reason(result) is Reason.CLOCK_SKEW


async def test_server_clock_skew_is_absorbed(harness: Harness) -> None:
    """A server clock 40 s off is measured and corrected, or is inside the exchange's window."""
    harness.add_key()
    harness.sim.clock_skew_ms = 40_000
    result = await harness.audit()
    assert result.ok, result.error


async def test_rate_limit_is_rate_limited(harness: Harness) -> None:
    harness.add_key()
    harness.sim.set_rate_limit(1, 60)
    result = await harness.audit(times=2)
    assert reason(result) is Reason.RATE_LIMITED


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_exchange_unavailable(harness: Harness, status: int) -> None:
    harness.add_key()
    harness.sim.fail_next(5, status)
    assert reason(await harness.audit()) is Reason.EXCHANGE_UNAVAILABLE


async def test_garbage_is_bad_response(harness: Harness) -> None:
    harness.add_key()
    harness.sim.truncate_next(5)
    assert reason(await harness.audit()) is Reason.BAD_RESPONSE


async def test_no_secret_escapes(harness: Harness) -> None:
    """Every failure's message carries no secret and no URL."""
    harness.add_key()
    settings, factory = harness.settings()
    results = []
    async with Auditor(settings, transport_factory=factory, clock=harness.clock) as auditor:
        for fault in ("fail", "garbage", "ip", "delete"):
            if fault == "fail":
                harness.sim.fail_next(5, 500)
            elif fault == "garbage":
                harness.sim.truncate_next(5)
            elif fault == "ip":
                harness.sim.update_key(harness.venue.api_key, ips=[REFUSED_ONLY])
            else:
                harness.sim.delete_key(harness.venue.api_key)
            results.append(await auditor.audit(settings.keys[0]))
    for result in results:
        assert result.error is not None
        text = json.dumps([result.error.message, str(result.error.code)])
        assert harness.venue.secret not in text
        for extra in harness.venue.key_extra.values():
            assert str(extra) not in text
        assert "http://" not in text


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
    venue: LivenessVenue, error: httpx.HTTPError, expected: Reason
) -> None:
    key = {
        "name": "k",
        "client": "acme",
        "exchange": venue.name,
        "api_key": venue.api_key,
        "api_secret": SENTINEL,
        **venue.key_extra,
    }
    settings = Settings(keys=[key], trusted_ips=["127.0.0.1/32"])
    async with Auditor(settings, transport_factory=lambda _n: BrokenTransport(error)) as auditor:
        result = await auditor.audit(settings.keys[0])
    assert reason(result) is expected
    assert result.error is not None
    assert SENTINEL not in result.error.message


# ----------------------------------------------------------------------------- check, metrics


def _mixed_config(tmp_path: Path, sims: dict[str, Any]) -> Path:
    """A configuration with a Binance key beside one key per liveness exchange."""
    keys: list[dict[str, Any]] = [
        {
            "name": "acme-binance",
            "client": "acme",
            "exchange": "binance",
            "api_key": DOC_API_KEY,
            "api_secret": DOC_SECRET,
        }
    ]
    for venue in VENUES.values():
        keys.append(
            {
                "name": f"acme-{venue.name}",
                "client": "acme",
                "exchange": venue.name,
                "api_key": venue.api_key,
                "api_secret": venue.secret,
                **venue.key_extra,
            }
        )
    config = {
        "listen": "127.0.0.1:0",  # never the default 0.0.0.0:9877: it may be in use
        "data_dir": str(tmp_path / "data"),
        "exchanges": {name: {"base_url": f"https://{name}.test"} for name in sims},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": keys,
    }
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _mixed_sims(clock: FakeClock) -> dict[str, Any]:
    binance = BinanceSimulator(clock=clock)
    binance.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    sims: dict[str, Any] = {"binance": binance}
    for venue in VENUES.values():
        sim = venue.make(clock)
        sim.add_key(venue.api_key, venue.secret, *venue.add_args)
        sims[venue.name] = sim
    return sims


def test_check_says_liveness_only_and_claims_no_rule(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keymon check` beside a Binance key: each liveness key is ACCEPTED, liveness only, with
    no permission, IP or deadline fact or finding, in the table and in JSON."""
    sims = _mixed_sims(clock)
    path = _mixed_config(tmp_path, sims)
    transports = {name: sim.transport() for name, sim in sims.items()}
    assert check(path, fmt="json", transport_factory=transports.get) == 0
    report = json.loads(capsys.readouterr().out)
    by_key = {entry["key"]: entry for entry in report["keys"]}
    assert by_key["acme-binance"]["coverage"] == "introspection"
    for venue in VENUES.values():
        entry = by_key[f"acme-{venue.name}"]
        assert entry["coverage"] == "liveness"
        assert entry["audit_ok"] is True
        assert entry["findings"] == []
        assert entry["facts"]["permissions"] == {}
        assert entry["facts"]["ip_restricted"] is None
        assert entry["facts"]["deadlines"] == []

    transports = {name: sim.transport() for name, sim in sims.items()}
    assert check(path, transport_factory=transports.get) == 0
    table = capsys.readouterr().out
    for venue in VENUES.values():
        row = next(line for line in table.splitlines() if line.startswith(f"acme-{venue.name} "))
        assert "ACCEPTED" in row
        assert "liveness only" in row
        assert "all rules pass" not in row
    binance_row = next(line for line in table.splitlines() if line.startswith("acme-binance "))
    assert "all rules pass" in binance_row
    # The summary counts them apart from the keys keymon could vouch for.
    assert table.rstrip().endswith(f"key(s): 1 ok, {len(VENUES)} accepted (liveness only)")


async def test_metrics_carry_coverage_and_no_rule_but_liveness(
    tmp_path: Path, clock: FakeClock
) -> None:
    """/metrics: keymon_key_info says coverage="liveness"; no permission, IP, deadline or
    creation series and no finding series but key_rejected/audit_failing for such keys."""
    sims = _mixed_sims(clock)
    path = _mixed_config(tmp_path, sims)
    transports = {name: sim.transport() for name, sim in sims.items()}
    app = App(load(path), transport_factory=transports.get)
    await app.start(serve_http=False, schedule=False)
    try:
        await app.audit_all()
        text = app.render_metrics().decode()
    finally:
        await app.stop()
    lines = text.splitlines()
    for venue in VENUES.values():
        label = f'key="acme-{venue.name}"'
        series = [line for line in lines if label in line and not line.startswith("#")]
        info = [line for line in series if line.startswith("keymon_key_info{")]
        assert len(info) == 1, info
        assert 'coverage="liveness"' in info[0]
        for metric in (
            "keymon_key_permission_enabled",
            "keymon_key_ip_restricted",
            "keymon_key_untrusted_ips",
            "keymon_key_created_timestamp_seconds",
            "keymon_key_deadline_timestamp_seconds",
        ):
            assert not [line for line in series if line.startswith(metric + "{")], metric
        rules = {
            line.split('rule="', 1)[1].split('"', 1)[0]
            for line in series
            if line.startswith("keymon_key_finding{")
        }
        assert rules <= {str(rule) for rule in LIVENESS_RULES}
        assert any(
            line.startswith("keymon_key_audit_ok{") and line.endswith(" 1.0") for line in series
        )
    assert 'key="acme-binance"' in text
    assert 'coverage="introspection"' in text

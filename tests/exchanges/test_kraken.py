"""The Kraken adapter: signing vectors, nonces, the field mapping, and error classification,
on canned answers and against the Kraken simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keymon.audit import Auditor
from keymon.config import Secret, Settings
from keymon.errors import ConfigError, ExchangeAuthError, ForbiddenRequest
from keymon.exchanges.base import RequestGate, build_client
from keymon.exchanges.kraken import (
    KEY_INFO_PATH,
    KrakenAdapter,
    KrakenAuth,
    NonceSource,
    allowlist,
    parse_time,
    permissions,
    sign,
)
from keymon.model import AuditResult, Deadline, Reason, Rule, Severity
from keymon.simulator.kraken import KrakenSimulator
from tests.conftest import SENTINEL, FakeClock

#: The secret and nonce of Kraken's official example (exchange-apis.md §2.16).
DOC_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
DOC_NONCE = "1616492376594"
KEY = "kraken-adapter-test-key"


def _secret(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


# ----------------------------------------------------------------------------- signing


def test_sign_reproduces_the_official_addorder_vector() -> None:
    """The AddOrder example of Kraken's spot REST auth guide."""
    postdata = f"nonce={DOC_NONCE}&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
    assert sign(DOC_SECRET, "/0/private/AddOrder", DOC_NONCE, postdata) == (
        "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
    )


def test_auth_reproduces_the_derived_getapikeyinfo_vector() -> None:
    """KrakenAuth writes the body ``nonce=...`` and signs §2.16's derived vector."""
    auth = KrakenAuth(_secret(KEY), _secret(DOC_SECRET), lambda: int(DOC_NONCE))
    request = httpx.Request("POST", f"https://api.kraken.com{KEY_INFO_PATH}")
    signed = next(auth.auth_flow(request))
    assert signed.content == f"nonce={DOC_NONCE}".encode()
    assert signed.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert signed.headers["API-Key"] == KEY
    assert signed.headers["API-Sign"] == (
        "0hXh9q5/fK8xgzNfiExbUyhEvsv1gAYGgL/5PWy8Xo8kFGhpI/ZwAnHB1eC0SYtlYiywFcypDRuBP/GjHp+ojA=="
    )
    assert DOC_SECRET not in repr(auth)


def test_a_secret_that_stopped_decoding_is_an_auth_error() -> None:
    """A secret file that changed into non-base64 fails the audit without quoting it."""
    auth = KrakenAuth(_secret(KEY), _secret("not base64!"), lambda: 1)
    with pytest.raises(ExchangeAuthError, match="not valid base64") as caught:
        next(auth.auth_flow(httpx.Request("POST", f"https://x.test{KEY_INFO_PATH}")))
    assert "not base64!" not in str(caught.value)


# ----------------------------------------------------------------------------- nonces


def test_nonce_is_milliseconds_and_strictly_increasing() -> None:
    """Nonces are the clock in ms, and still increase within one millisecond."""
    source = NonceSource(lambda: 1700000000.0004)
    assert [source.next("a") for _ in range(3)] == [1700000000000, 1700000000001, 1700000000002]


def test_nonce_sequences_are_per_key() -> None:
    """A burst over many keys does not push any key's nonce ahead of the clock."""
    source = NonceSource(lambda: 1700000000.0)
    assert {source.next(f"key-{i}") for i in range(100)} == {1700000000000}


def test_nonce_follows_the_clock_forward() -> None:
    """Once the clock passes the last nonce, nonces are the clock again."""
    now = [1700000000.0]
    source = NonceSource(lambda: now[0])
    source.next("a")
    now[0] += 5
    assert source.next("a") == 1700000005000


# ----------------------------------------------------------------------------- mapping


def test_permissions_map_onto_the_vocabulary() -> None:
    """query-funds is read, order permissions are spot_trade, withdraw-funds is withdraw."""
    result = permissions(
        ["query-funds", "query-open-trades", "modify-trades", "withdraw-funds", "deposit-funds"]
    )
    assert result == {
        "read": True,
        "spot_trade": True,
        "withdraw": True,
        "query-open-trades": True,
        "deposit-funds": True,
    }


def test_absent_mapped_permissions_are_observed_off() -> None:
    """The list is the key's whole set: read, spot_trade and withdraw absent are off."""
    assert permissions(["query-ledger"]) == {
        "read": False,
        "spot_trade": False,
        "withdraw": False,
        "query-ledger": True,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], ()),
        (["203.0.113.7", "198.51.100.0/24"], ("203.0.113.7", "198.51.100.0/24")),
        ("203.0.113.7, 10.0.0.0/8", ("203.0.113.7", "10.0.0.0/8")),
        (None, None),
    ],
    ids=["empty", "array", "comma-string", "absent"],
)
def test_allowlist(value: Any, expected: tuple[str, ...] | None) -> None:
    """Empty is unrestricted, absent is not visible; a comma string is tolerated."""
    assert allowlist(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", None),
        (0, None),
        (None, None),
        ("", None),
        ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1700000000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("1700000000.5", datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)),
        (1700000000000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2023-11-14T22:13:20Z", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
    ids=["zero-str", "zero", "none", "empty", "s-str", "s", "s-float", "ms", "iso"],
)
def test_parse_time(value: Any, expected: datetime | None) -> None:
    """Times are tolerated as strings or numbers, seconds or ms, or ISO 8601; 0 is none."""
    assert parse_time(value) == expected


def test_parse_time_refuses_garbage() -> None:
    """Something that is no time is an error, not a silent 'no deadline'."""
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_time("soon")


# ----------------------------------------------------------------------------- canned answers


def settings(**key: Any) -> Settings:
    entry = {
        "name": "k",
        "client": "acme",
        "exchange": "kraken",
        "api_key": KEY,
        "api_secret": DOC_SECRET,
        **key,
    }
    return Settings(keys=[entry], trusted_ips=["203.0.113.0/24"])


async def audit_with(transport: httpx.AsyncBaseTransport, **key: Any) -> AuditResult:
    s = settings(**key)
    async with Auditor(s, transport_factory=lambda _n: transport) as auditor:
        return await auditor.audit(s.keys[0])


def canned(*answers: object, seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    """Answer each request with the next body (HTTP 200 unless a Response is given)."""
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, content=json.dumps(answer).encode())

    return httpx.MockTransport(handler)


def key_info(**overrides: object) -> dict[str, object]:
    """A GetApiKeyInfo result with the fields §2.16 lists."""
    result: dict[str, object] = {
        "apiKeyName": "desk",
        "apiKey": KEY,
        "nonce": "1700000000000",
        "nonceWindow": 0,
        "permissions": ["query-funds", "query-open-trades", "modify-trades"],
        "iban": "AA12 N84G WQHK AA7X",
        "validUntil": "0",
        "queryFrom": "0",
        "queryTo": "0",
        "createdTime": "1700000000",
        "modifiedTime": "1700000000",
        "ipAllowlist": ["203.0.113.7"],
        "lastUsed": "1700000000",
    }
    result.update(overrides)
    return {"error": [], "result": result}


async def test_audit_reads_the_key_info() -> None:
    """One POST; permissions, allowlist, creation and expiry become facts."""
    seen: list[httpx.Request] = []
    result = await audit_with(
        canned(
            key_info(
                permissions=["query-funds", "withdraw-funds"],
                ipAllowlist=["203.0.113.7", "198.51.100.0/24"],
                validUntil="1800000000",
            ),
            seen=seen,
        )
    )
    assert [(r.method, r.url.path) for r in seen] == [("POST", KEY_INFO_PATH)]
    facts = result.facts
    assert facts is not None
    assert facts.permissions["withdraw"] is True
    assert facts.ip_restricted is True
    assert facts.ip_list == ("203.0.113.7", "198.51.100.0/24")
    assert facts.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert facts.deadlines == (Deadline("key_expiry", datetime.fromtimestamp(1800000000, UTC)),)
    rules = {f.rule for f in result.findings}
    assert Rule.WITHDRAW_ENABLED in rules
    assert Rule.UNTRUSTED_IP in rules  # 198.51.100.0/24 lies outside trusted_ips


async def test_empty_allowlist_is_unrestricted_and_zero_is_no_expiry() -> None:
    """``[]`` means any IP (ip_unrestricted fires); ``"0"`` means no deadline."""
    result = await audit_with(canned(key_info(ipAllowlist=[], validUntil="0")))
    assert result.facts is not None
    assert result.facts.ip_restricted is False
    assert result.facts.ip_list == ()
    assert result.facts.deadlines == ()
    assert (Rule.IP_UNRESTRICTED, Severity.CRITICAL) in {
        (f.rule, f.severity) for f in result.findings
    }


async def test_absent_allowlist_is_not_visible() -> None:
    """Without ipAllowlist neither IP rule is evaluated: unknown is not 'unrestricted'."""
    info = key_info()
    assert isinstance(info["result"], dict)
    del info["result"]["ipAllowlist"]
    result = await audit_with(canned(info))
    assert result.facts is not None
    assert result.facts.ip_restricted is None
    assert result.facts.ip_list is None
    rules = {c.rule for c in result.evaluation.checks}
    assert Rule.IP_UNRESTRICTED not in rules
    assert Rule.UNTRUSTED_IP not in rules


async def test_warnings_do_not_fail_the_audit() -> None:
    """Entries starting with W are warnings: the result is used."""
    info = key_info()
    info["error"] = ["WGeneral:Something to know"]
    result = await audit_with(canned(info))
    assert result.ok, result.error


async def test_unreadable_created_time_is_not_visible_but_expiry_must_be_read() -> None:
    """A strange createdTime leaves the age unknown; a strange validUntil fails the audit."""
    result = await audit_with(canned(key_info(createdTime="yesterday")))
    assert result.ok
    assert result.facts is not None
    assert result.facts.created_at is None
    result = await audit_with(canned(key_info(validUntil="someday")))
    assert result.error is not None
    assert result.error.reason is Reason.BAD_RESPONSE
    assert "validUntil" in result.error.message


async def test_info_about_another_key_is_a_bad_response() -> None:
    """An answer describing another key is not trusted."""
    result = await audit_with(canned(key_info(apiKey="someone-else")))
    assert result.error is not None
    assert result.error.reason is Reason.BAD_RESPONSE


async def test_missing_permissions_is_a_bad_response() -> None:
    """Without ``permissions`` the answer says nothing the rules can stand on."""
    result = await audit_with(canned({"error": [], "result": {"apiKey": KEY}}))
    assert result.error is not None
    assert result.error.reason is Reason.BAD_RESPONSE
    assert "permissions" in result.error.message


@pytest.mark.parametrize(
    ("error", "reason", "says"),
    [
        ("EAPI:Invalid key", Reason.KEY_REJECTED, "deleted"),
        ("EAPI:Invalid signature", Reason.KEY_REJECTED, "wrong secret"),
        ("EGeneral:Permission denied", Reason.KEY_REJECTED, "IP allowlist"),
        ("EAPI:Invalid nonce", Reason.CLOCK_SKEW, "nonce"),
        ("EAPI:Rate limit exceeded", Reason.RATE_LIMITED, "counter"),
        ("EGeneral:Temporary lockout", Reason.RATE_LIMITED, "lockout"),
        ("EService:Unavailable", Reason.EXCHANGE_UNAVAILABLE, "Unavailable"),
        ("EGeneral:Something new", Reason.BAD_RESPONSE, "Something new"),
    ],
    ids=["key", "signature", "ip", "nonce", "rate", "lockout", "service", "unknown"],
)
async def test_errors_map_onto_reasons(error: str, reason: Reason, says: str) -> None:
    """Kraken's HTTP-200 error strings map onto keymon's reasons, with the cause named."""
    result = await audit_with(canned({"error": [error]}))
    assert result.error is not None
    assert result.error.reason is reason
    assert result.error.code == error
    assert says in result.error.message


@pytest.mark.parametrize(
    ("status", "reason"),
    [(502, Reason.EXCHANGE_UNAVAILABLE), (429, Reason.RATE_LIMITED), (404, Reason.BAD_RESPONSE)],
)
async def test_non_envelope_answers(status: int, reason: Reason) -> None:
    """HTML and other non-envelope answers are classified by their status."""
    result = await audit_with(canned(httpx.Response(status, content=b"<html>no</html>")))
    assert result.error is not None
    assert result.error.reason is reason


async def test_allowlist_is_exactly_the_key_info_post() -> None:
    """The read-only client refuses any other Kraken call, AddOrder first of all."""
    assert KrakenAdapter.read_only_endpoints == frozenset({("POST", KEY_INFO_PATH)})
    client = build_client(
        exchange="kraken",
        base_url="https://api.kraken.com",
        allowlist=KrakenAdapter.read_only_endpoints,
        timeout=5.0,
        transport=httpx.MockTransport(lambda _r: httpx.Response(200, json={})),
    )
    async with client:
        with pytest.raises(ForbiddenRequest):
            await client.post("/0/private/AddOrder")
        with pytest.raises(ForbiddenRequest):
            await client.post("/0/private/Withdraw")
        with pytest.raises(ForbiddenRequest):
            await client.get(KEY_INFO_PATH)


# ----------------------------------------------------------------------------- simulator


async def sim_audit(sim: KrakenSimulator, clock: FakeClock, api_key: str) -> AuditResult:
    s = settings(api_key=api_key)
    transport = sim.transport()
    async with Auditor(s, transport_factory=lambda _n: transport, clock=clock) as auditor:
        return await auditor.audit(s.keys[0])


async def test_a_nonce_clash_with_a_bot_is_retried_once(clock: FakeClock) -> None:
    """A bot that just signed a larger nonce costs keymon one retry, not a failed audit."""
    api_key = "kraken-clash-once"
    sim = KrakenSimulator(clock=clock)
    sim.add_key(api_key, DOC_SECRET)
    # The bot signed in the same millisecond, just before keymon: keymon's first nonce equals
    # the bot's and is refused; the retry's (one above it) passes.
    sim.use_nonce(api_key, int(clock.now * 1000))
    result = await sim_audit(sim, clock, api_key)
    assert result.ok, result.error
    assert sim.errors("EAPI:Invalid nonce") == 1
    assert sim.request_count(api_key) == 2


async def test_a_persistent_nonce_clash_is_clock_skew_not_key_rejected(clock: FakeClock) -> None:
    """Bots on a larger nonce scale make every keymon nonce too small: clock_skew, no
    claim that the key was revoked."""
    api_key = "kraken-clash-forever"
    sim = KrakenSimulator(clock=clock)
    sim.add_key(api_key, DOC_SECRET)
    sim.use_nonce(api_key, int(clock.now * 1_000_000))  # a bot using microseconds
    result = await sim_audit(sim, clock, api_key)
    assert result.error is not None
    assert result.error.reason is Reason.CLOCK_SKEW
    assert result.error.code == "EAPI:Invalid nonce"
    assert {f.rule for f in result.findings} != {Rule.KEY_REJECTED}
    assert sim.request_count(api_key) == 2  # one retry, then it stops


async def test_keymon_leaves_a_millisecond_bot_room(clock: FakeClock) -> None:
    """After keymon's audit the key's nonce is the clock in ms: a bot's next ms nonce passes."""
    api_key = "kraken-bot-room"
    sim = KrakenSimulator(clock=clock)
    sim.add_key(api_key, DOC_SECRET)
    assert (await sim_audit(sim, clock, api_key)).ok
    assert sim.last_nonce(api_key) == int(clock.now * 1000)


async def test_nonces_survive_a_new_auditor(clock: FakeClock) -> None:
    """A reload builds a new adapter; it never reuses a nonce within the same millisecond."""
    api_key = "kraken-reload"
    sim = KrakenSimulator(clock=clock)
    sim.add_key(api_key, DOC_SECRET)
    assert (await sim_audit(sim, clock, api_key)).ok
    assert (await sim_audit(sim, clock, api_key)).ok
    assert sim.errors("EAPI:Invalid nonce") == 0


async def test_sentinel_secret_never_surfaces(clock: FakeClock) -> None:
    """A wrong (base64) secret fails as key_rejected and the secret appears nowhere."""
    import base64

    sentinel = base64.b64encode(SENTINEL.encode()).decode()
    api_key = "kraken-sentinel"
    sim = KrakenSimulator(clock=clock)
    sim.add_key(api_key, DOC_SECRET)
    s = settings(api_key=api_key, api_secret=sentinel)
    transport = sim.transport()
    async with Auditor(s, transport_factory=lambda _n: transport, clock=clock) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    text = json.dumps([result.error.message, str(result.error.code), repr(s.keys[0])])
    assert sentinel not in text
    assert SENTINEL not in text


# ----------------------------------------------------------------------------- config


def test_a_secret_that_is_not_base64_is_a_config_error_naming_the_key(tmp_path: Any) -> None:
    """validate-config names the key and never prints the secret."""
    from keymon.config import load

    secret = "SENTINEL-not-base64!!"
    path = tmp_path / "keymon.yaml"
    path.write_text(
        "keys:\n"
        "  - {name: acme-kraken, client: acme, exchange: kraken, api_key: a, api_secret: "
        f"'{secret}'}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(path)
    problems = caught.value.problems
    assert len(problems) == 1
    assert problems[0].startswith("keys[0].api_secret: ")
    assert "'acme-kraken'" in problems[0]
    assert "base64" in problems[0]
    assert secret not in problems[0]


def test_key_loads_with_the_kraken_defaults(tmp_path: Any) -> None:
    """A Kraken key needs only api_key and a base64 api_secret; defaults point at Kraken."""
    from keymon.config import load

    path = tmp_path / "keymon.yaml"
    path.write_text(
        "keys:\n"
        "  - {name: k, client: acme, exchange: kraken, api_key: a, "
        f"api_secret: '{DOC_SECRET}'}}\n"
    )
    s = load(path).settings
    assert s.exchanges.kraken.base_url == "https://api.kraken.com"
    assert s.exchanges.kraken.max_weight_per_minute == 60


class RecordingGate(RequestGate):
    """A request gate that notes every weight it is asked for."""

    def __init__(self) -> None:
        self.acquired: list[tuple[str, int]] = []

    async def acquire(self, exchange: str, weight: int) -> None:
        self.acquired.append((exchange, weight))


async def test_every_call_passes_the_request_gate(clock: FakeClock) -> None:
    """The weight budget sees each Kraken call, the nonce retry included."""
    api_key = "kraken-gate"
    sim = KrakenSimulator(clock=clock)
    sim.add_key(api_key, DOC_SECRET)
    sim.use_nonce(api_key, int(clock.now * 1000))  # a same-millisecond clash: one retry
    s = settings(api_key=api_key)
    gate = RecordingGate()
    transport = sim.transport()
    async with Auditor(s, transport_factory=lambda _n: transport, clock=clock, gate=gate) as a:
        assert (await a.audit(s.keys[0])).ok
    assert gate.acquired == [("kraken", 1), ("kraken", 1)]

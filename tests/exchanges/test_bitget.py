"""The Bitget adapter: signing, the field mapping, and error classification on canned answers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from keymon.audit import Auditor
from keymon.config import Secret, Settings, load
from keymon.exchanges.bitget import BitgetAuth, BitgetKey, parse_ips, permissions
from keymon.model import AuditResult, Reason
from keymon.simulator.bitget import BitgetSimulator
from tests.conftest import FakeClock

KEY = "bg_testkey"
SECRET = "testsecret"
PASSPHRASE = "testpassphrase"


def _secret(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def test_auth_reproduces_the_derived_vector() -> None:
    """BitgetAuth signs the *derived* vector of exchange-apis.md §2.5 (Bitget publishes no
    official signature example): secret ``testsecret``, pre-hash
    ``1700000000000GET/api/v2/spot/account/info``."""
    auth = BitgetAuth(_secret(KEY), _secret(SECRET), _secret(PASSPHRASE), lambda: 1700000000000)
    request = httpx.Request("GET", "https://api.bitget.com/api/v2/spot/account/info")
    signed = next(auth.auth_flow(request))
    assert signed.headers["ACCESS-KEY"] == KEY
    assert signed.headers["ACCESS-TIMESTAMP"] == "1700000000000"
    assert signed.headers["ACCESS-PASSPHRASE"] == PASSPHRASE
    assert signed.headers["ACCESS-SIGN"] == "pFmdjL7tpSbaW4rypKwUpA6eJr6rD4GL7/llKrwB1gg="
    assert SECRET not in repr(auth)
    assert PASSPHRASE not in repr(auth)


def test_auth_signs_the_query_with_a_question_mark() -> None:
    """A query string joins the pre-hash as ``?query`` (the sign differs from the bare path)."""
    auth = BitgetAuth(_secret(KEY), _secret(SECRET), _secret(PASSPHRASE), lambda: 1700000000000)
    bare = next(auth.auth_flow(httpx.Request("GET", "https://x.test/api/v2/spot/account/info")))
    queried = next(
        auth.auth_flow(httpx.Request("GET", "https://x.test/api/v2/spot/account/info?a=1"))
    )
    assert bare.headers["ACCESS-SIGN"] != queried.headers["ACCESS-SIGN"]


def settings(**key_overrides: Any) -> Settings:
    """One Bitget key, trusted IP loopback."""
    key = {
        "name": "k",
        "client": "acme",
        "exchange": "bitget",
        "api_key": KEY,
        "api_secret": SECRET,
        "passphrase": PASSPHRASE,
        **key_overrides,
    }
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"])


async def audit_with(transport: httpx.AsyncBaseTransport, **key_overrides: Any) -> AuditResult:
    """Audit the one key through ``transport``."""
    s = settings(**key_overrides)
    async with Auditor(s, transport_factory=lambda _n: transport) as auditor:
        return await auditor.audit(s.keys[0])


def canned(status: int, body: object) -> httpx.AsyncBaseTransport:
    """Time answers normally; account/info answers ``status``/``body``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v2/public/time":
            return httpx.Response(200, json=envelope("00000", "success", {"serverTime": "1"}))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return httpx.MockTransport(handler)


def envelope(code: str, msg: str = "", data: object = None) -> dict[str, object]:
    """A v2 envelope."""
    return {"code": code, "msg": msg, "requestTime": 1, "data": data}


def info(**overrides: object) -> dict[str, object]:
    """exchange-apis.md §2.5's constructed example, with overrides."""
    data: dict[str, object] = {
        "userId": "1234567890",
        "inviterId": "0",
        "ips": "203.0.113.10",
        "authorities": ["stor", "stow"],
        "parentId": 1234567890,
        "traderType": "not_trader",
        "channelCode": "",
        "channel": "",
        "regisTime": "1600000000000",
    }
    data.update(overrides)
    return envelope("00000", "success", data)


def test_key_requires_a_passphrase() -> None:
    """A Bitget key without passphrase does not load."""
    key = settings().keys[0].model_dump()
    with pytest.raises(ValidationError, match="passphrase"):
        Settings(keys=[{k: v for k, v in key.items() if k != "passphrase"}])


def test_key_loads_with_the_bitget_defaults(tmp_path: Any) -> None:
    """A Bitget key and an empty bitget section load with Bitget's defaults."""
    path = tmp_path / "keymon.yaml"
    path.write_text(
        "exchanges:\n  bitget: {}\nkeys:\n"
        "  - {name: k, client: acme, exchange: bitget, api_key: a, api_secret: b,"
        " passphrase: c}\n"
    )
    s = load(path).settings
    assert isinstance(s.keys[0], BitgetKey)
    assert s.keys[0].passphrase.get() == "c"
    assert s.exchanges.bitget.base_url == "https://api.bitget.com"
    assert s.exchanges.bitget.max_weight_per_minute == 60


def test_budget_above_the_documented_limit_is_refused() -> None:
    """More than 60 requests/min would break the 1 request/s limit: refused."""
    with pytest.raises(ValidationError, match="max_weight_per_minute"):
        Settings(keys=[], exchanges={"bitget": {"max_weight_per_minute": 61}})


def test_documented_example_maps() -> None:
    """§2.5's example: spot read + spot trade, whitelisted to one IP."""
    assert permissions(["stor", "stow"]) == {
        "read": True,
        "spot_trade": True,
        "margin_trade": False,
        "futures_trade": False,
        "withdraw": False,
        "universal_transfer": False,
    }


@pytest.mark.parametrize(
    ("code", "permission"),
    [
        ("stow", "spot_trade"),
        ("smow", "margin_trade"),
        ("coow", "futures_trade"),
        ("cpow", "futures_trade"),
        ("wwow", "withdraw"),
        ("wtow", "universal_transfer"),
    ],
)
def test_write_codes_map(code: str, permission: str) -> None:
    """Each write code of §4's table turns its permission on."""
    assert permissions([code])[permission] is True


def test_read_and_unknown_codes() -> None:
    """Read codes are read; chow, the doc example's 'trade' and anything unknown stay raw, and
    an undocumented code hides the mapped permissions (not visible, never off)."""
    mapped = permissions(["coor", "taxr", "readonly", "chow", "trade", "zzzw"])
    assert mapped["read"] is True
    assert mapped["chow"] is True
    assert mapped["trade"] is True
    assert mapped["zzzw"] is True
    assert "coor" not in mapped
    assert "spot_trade" not in mapped
    documented = permissions(["coor", "taxr", "chow"])
    assert documented["spot_trade"] is False
    assert documented["chow"] is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        ("127.0.0.1", ("127.0.0.1",)),
        ("1.2.3.4,5.6.7.8", ("1.2.3.4", "5.6.7.8")),
        ("1.2.3.4, 5.6.7.8", ("1.2.3.4", "5.6.7.8")),
    ],
)
def test_ips_string(value: str | None, expected: tuple[str, ...]) -> None:
    """``ips`` is one string; commas (assumed separator) and spaces split it."""
    assert parse_ips(value) == expected


async def test_canned_documented_example() -> None:
    """The canned §2.5 answer: IP-restricted, no created_at and no deadline (regisTime is the
    account's)."""
    result = await audit_with(canned(200, info()))
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.ip_restricted is True
    assert result.facts.ip_list == ("203.0.113.10",)
    assert result.facts.created_at is None
    assert result.facts.deadlines == ()


async def test_empty_ips_is_unrestricted() -> None:
    """An empty ``ips`` string: no whitelist."""
    result = await audit_with(canned(200, info(ips="")))
    assert result.facts is not None
    assert result.facts.ip_restricted is False


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "40006", Reason.KEY_REJECTED),
        (400, "40009", Reason.KEY_REJECTED),
        (400, "40012", Reason.KEY_REJECTED),
        (400, "40014", Reason.KEY_REJECTED),
        (400, "40018", Reason.KEY_REJECTED),
        (400, "40008", Reason.CLOCK_SKEW),
        (400, "40037", Reason.KEY_REJECTED),
        (429, "429", Reason.RATE_LIMITED),
        (400, "40085", Reason.BAD_RESPONSE),
        (500, "50000", Reason.EXCHANGE_UNAVAILABLE),
        (400, "43000", Reason.BAD_RESPONSE),
    ],
)
async def test_error_codes(status: int, code: str, expected: Reason) -> None:
    """Each documented code becomes its reason."""
    result = await audit_with(canned(status, envelope(code, "some message")))
    assert result.error is not None
    assert result.error.reason is expected


async def test_refused_ip_is_reported() -> None:
    """A 40018 whose message names the IP carries it as refused_ip."""
    result = await audit_with(canned(400, envelope("40018", "Invalid IP, your ip is 10.1.2.3")))
    assert result.error is not None
    assert "10.1.2.3" in result.error.message


@pytest.mark.parametrize(
    "body", [b"<html>", info(authorities=None), info(ips=["1.2.3.4"]), envelope("00000")]
)
async def test_unexpected_shapes_are_bad_response(body: object) -> None:
    """A body that is no envelope, or data without authorities, is bad_response."""
    result = await audit_with(canned(200, body))
    assert result.error is not None
    assert result.error.reason is Reason.BAD_RESPONSE


# ----------------------------------------------------------------------------- simulator


async def test_against_the_simulator(clock: FakeClock) -> None:
    """Both ways: the adapter's signature and passphrase pass the independent simulator."""
    sim = BitgetSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE, authorities=["stor", "stow", "wwow", "chow"])
    s = settings()
    async with Auditor(s, transport_factory=lambda _n: sim.transport(), clock=clock) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.permissions["withdraw"] is True
    assert result.facts.permissions["chow"] is True
    assert result.facts.ip_list == ("127.0.0.1",)


async def test_wrong_passphrase_is_key_rejected(clock: FakeClock) -> None:
    """A wrong passphrase: 40012, key_rejected, and the passphrase is not echoed."""
    sim = BitgetSimulator(clock=clock)
    sim.add_key(KEY, SECRET, "the-right-one")
    s = settings()
    async with Auditor(s, transport_factory=lambda _n: sim.transport(), clock=clock) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert result.error.code == "40012"
    assert PASSPHRASE not in result.error.message


async def test_skewed_server_is_followed(clock: FakeClock) -> None:
    """A server clock 2 minutes ahead (outside the 30 s window) is followed via the time sync."""
    sim = BitgetSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE)
    sim.clock_skew_ms = 120_000
    s = settings()
    async with Auditor(s, transport_factory=lambda _n: sim.transport(), clock=clock) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.ok, result.error

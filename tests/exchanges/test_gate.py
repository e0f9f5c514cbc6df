"""The Gate adapter: signing, the field mapping, and error classification on canned answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keymon.audit import Auditor
from keymon.config import Secret, Settings, load
from keymon.exchanges.gate import EMPTY_BODY_SHA512, GateAuth, GateKey, Perm, own_entry, permissions
from keymon.model import AuditResult, Reason

KEY = "c5dcfbf1f3a7d00dfeedbeef"
SECRET = "testsecret"
DETAIL = "/api/v4/account/detail"
MAIN_KEYS = "/api/v4/account/main_keys"


def _secret(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def test_auth_reproduces_the_derived_vector() -> None:
    """GateAuth signs the derived vector of exchange-apis.md §2.4."""
    auth = GateAuth(_secret(KEY), _secret(SECRET), lambda: 1700000000)
    request = httpx.Request("GET", "https://api.gateio.ws/api/v4/account/detail")
    signed = next(auth.auth_flow(request))
    assert signed.headers["KEY"] == KEY
    assert signed.headers["Timestamp"] == "1700000000"
    assert signed.headers["SIGN"] == (
        "36948941e0e3da66275b97186e291a6b05c438404ccc26f1f78e28d8b2cb5842"
        "d69950586c2ebb4fc5a1a0bdd57d1351df5c09610768032df7001acd02652656"
    )
    assert SECRET not in repr(auth)


def test_empty_body_hash_is_the_documented_one() -> None:
    assert EMPTY_BODY_SHA512.startswith("cf83e1357eefb8bdf1542850d66d8007")


def test_auth_signs_the_query() -> None:
    auth = GateAuth(_secret(KEY), _secret(SECRET), lambda: 1700000000)
    bare = next(auth.auth_flow(httpx.Request("GET", "https://x.test/api/v4/account/detail")))
    queried = next(auth.auth_flow(httpx.Request("GET", "https://x.test/api/v4/account/detail?a=1")))
    assert bare.headers["SIGN"] != queried.headers["SIGN"]


def settings() -> Settings:
    key = {"name": "k", "client": "acme", "exchange": "gate", "api_key": KEY, "api_secret": SECRET}
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"])


async def audit_with(transport: httpx.AsyncBaseTransport) -> AuditResult:
    s = settings()
    async with Auditor(s, transport_factory=lambda _n: transport) as auditor:
        return await auditor.audit(s.keys[0])


def detail(**overrides: object) -> dict[str, object]:
    """§2.4's constructed account/detail example."""
    data: dict[str, object] = {
        "user_id": 1667201533,
        "ip_whitelist": ["203.0.113.10"],
        "currency_pairs": [],
        "key": {"mode": 1},
        "tier": 2,
        "copy_trading_role": 0,
    }
    data.update(overrides)
    return data


def main_key(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "state": 1,
        "mode": 1,
        "name": "desk",
        "currency_pairs": [],
        "user_id": 1667201533,
        "ip_whitelist": ["203.0.113.10"],
        "perms": [{"name": "spot", "read_only": False}, {"name": "wallet", "read_only": True}],
        "key": "c5dcfbf1f3a7*****",
        "created_at": 1700000000,
        "updated_at": 1700000000,
        "last_access": 1700000000,
    }
    data.update(overrides)
    return data


def canned(
    detail_answer: tuple[int, object], keys_answer: tuple[int, object] | None = None
) -> httpx.AsyncBaseTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v4/spot/time":
            return httpx.Response(200, json={"server_time": 1700000000000})
        if request.url.path == DETAIL:
            status, body = detail_answer
        elif request.url.path == MAIN_KEYS and keys_answer is not None:
            status, body = keys_answer
        else:
            status, body = 404, {"label": "NOT_FOUND", "message": "no"}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return httpx.MockTransport(handler)


def test_key_loads_with_the_gate_defaults(tmp_path: Any) -> None:
    path = tmp_path / "keymon.yaml"
    path.write_text(
        "exchanges:\n  gate: {}\nkeys:\n"
        "  - {name: k, client: acme, exchange: gate, api_key: a, api_secret: b}\n"
    )
    s = load(path).settings
    assert isinstance(s.keys[0], GateKey)
    assert s.exchanges.gate.base_url == "https://api.gateio.ws"
    assert s.exchanges.gate.max_weight_per_minute == 60


def test_permissions_mapping() -> None:
    perms = [
        Perm(name="spot", read_only=False),
        Perm(name="futures", read_only=True),
        Perm(name="wallet", read_only=False),
        Perm(name="pilot", read_only=False),
    ]
    assert permissions(perms) == {
        "read": True,
        "spot_trade": True,
        "margin_trade": False,
        "futures_trade": False,
        "options_trade": False,
        "margin_loan": False,
        "withdraw": True,
        "pilot": True,
    }


def test_withdraw_is_off_without_wallet_write() -> None:
    assert permissions([Perm(name="spot", read_only=False)])["withdraw"] is False
    assert permissions([Perm(name="withdraw", read_only=False)])["withdraw"] is True


def test_own_entry_matches_the_unmasked_prefix() -> None:
    other = main_key(key="ffff0000*****")
    assert own_entry([other, main_key()], KEY) is not None
    assert own_entry([other], KEY) is None
    assert own_entry([main_key(), main_key()], KEY) is None  # ambiguous


async def test_audit_reads_detail_and_main_keys() -> None:
    result = await audit_with(canned((200, detail()), (200, [main_key()])))
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.ip_restricted is True
    assert result.facts.ip_list == ("203.0.113.10",)
    assert result.facts.permissions["spot_trade"] is True
    assert result.facts.permissions["futures_trade"] is False
    assert result.facts.created_at == datetime.fromtimestamp(1700000000, tz=UTC)


async def test_main_keys_refused_falls_back_to_detail() -> None:
    result = await audit_with(
        canned((200, detail(ip_whitelist=[])), (403, {"label": "FORBIDDEN", "message": "no"}))
    )
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.ip_restricted is False
    assert result.facts.permissions == {}
    assert result.facts.created_at is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"label": "INVALID_KEY", "message": "Invalid key"}, Reason.KEY_REJECTED),
        (401, {"label": "INVALID_SIGNATURE", "message": "bad"}, Reason.KEY_REJECTED),
        (403, {"label": "IP_FORBIDDEN", "message": "IP 10.1.2.3 not allowed"}, Reason.KEY_REJECTED),
        (401, {"label": "REQUEST_EXPIRED", "message": "gap"}, Reason.CLOCK_SKEW),
        (429, {"label": "TOO_MANY_REQUESTS", "message": "slow"}, Reason.RATE_LIMITED),
        (502, b"<html>", Reason.EXCHANGE_UNAVAILABLE),
        (200, b"{trunc", Reason.BAD_RESPONSE),
    ],
)
async def test_errors_are_classified(status: int, body: object, expected: Reason) -> None:
    result = await audit_with(canned((status, body)))
    assert result.error is not None
    assert result.error.reason is expected


async def test_ip_forbidden_names_the_refused_ip() -> None:
    result = await audit_with(
        canned((403, {"label": "IP_FORBIDDEN", "message": "IP 10.1.2.3 not in whitelist"}))
    )
    assert result.error is not None
    assert result.error.refused_ip == "10.1.2.3"


async def test_detail_without_expected_shape_is_bad_response() -> None:
    result = await audit_with(canned((200, {"ip_whitelist": "not-a-list"})))
    assert result.error is not None
    assert result.error.reason is Reason.BAD_RESPONSE

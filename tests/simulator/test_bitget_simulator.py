"""Tests for the Bitget simulator: signing, the passphrase, the timestamp window, errors, the
rate limit, faults and serving.

Requests are signed by the helper below (not by keymon's adapter), so the simulator is checked
against Bitget's documented rules (exchange-apis.md §2.5) only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from keymon.simulator.bitget import BitgetSimulator, prehash, sign
from tests.conftest import FakeClock

KEY = "bg_testkey"
SECRET = "testsecret"
PASSPHRASE = "testpassphrase"
PATH = "/api/v2/spot/account/info"


def signed_headers(
    now_ms: int,
    *,
    key: str = KEY,
    secret: str = SECRET,
    passphrase: str = PASSPHRASE,
    path: str = PATH,
    query: str = "",
) -> dict[str, str]:
    """The four ACCESS-* headers, computed independently of keymon's adapter."""
    text = f"{now_ms}GET{path}" + (f"?{query}" if query else "")
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return {
        "ACCESS-KEY": key,
        "ACCESS-SIGN": base64.b64encode(digest).decode(),
        "ACCESS-TIMESTAMP": str(now_ms),
        "ACCESS-PASSPHRASE": passphrase,
        "Content-Type": "application/json",
        "locale": "en-US",
    }


@pytest.fixture
def bitget(clock: FakeClock) -> BitgetSimulator:
    """A simulator on the fake clock holding one key, whitelisted to 127.0.0.1."""
    simulator = BitgetSimulator(clock=clock)
    simulator.add_key(KEY, SECRET, PASSPHRASE)
    return simulator


class _Sync(httpx.BaseTransport):
    """A minimal sync transport onto ``BitgetSimulator.handle``."""

    def __init__(self, sim: BitgetSimulator, ip: str) -> None:
        self._sim, self._ip = sim, ip

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path, _, query = request.url.raw_path.decode().partition("?")
        sim = self._sim.handle(
            request.method, path, query, request.read(), request.headers, self._ip
        )
        return httpx.Response(sim.status, headers=sim.headers, content=sim.body)


def call(
    sim: BitgetSimulator, headers: dict[str, str], *, ip: str = "127.0.0.1", target: str = PATH
) -> tuple[int, Any]:
    """GET account/info (or ``target``) in-process; returns status and parsed body."""
    with httpx.Client(transport=_Sync(sim, ip), base_url="http://bitget.test") as client:
        response = client.get(target, headers=headers)
    try:
        body = json.loads(response.content)
    except ValueError:
        body = response.content
    return response.status_code, body


def test_derived_signature_vector() -> None:
    """Derived (not official) vector of exchange-apis.md §2.5: Bitget publishes none."""
    text = prehash("1700000000000", "GET", PATH, "", "")
    assert text == "1700000000000GET/api/v2/spot/account/info"
    assert sign("testsecret", text) == "pFmdjL7tpSbaW4rypKwUpA6eJr6rD4GL7/llKrwB1gg="
    assert prehash("1", "get", "/p", "a=1", "{}") == "1GET/p?a=1{}"


def test_valid_request_answers_the_documented_envelope(bitget: BitgetSimulator) -> None:
    """A correctly signed call gets code 00000 and the account-info fields."""
    status, body = call(bitget, signed_headers(bitget.server_time_ms()))
    assert status == 200
    assert set(body) == {"code", "msg", "requestTime", "data"}
    assert (body["code"], body["msg"]) == ("00000", "success")
    data = body["data"]
    assert set(data) == {
        "userId",
        "inviterId",
        "ips",
        "authorities",
        "parentId",
        "traderType",
        "channelCode",
        "channel",
        "regisTime",
    }
    assert data["ips"] == "127.0.0.1"
    assert data["authorities"] == ["stor", "stow"]


def test_ips_is_one_comma_separated_string(bitget: BitgetSimulator, clock: FakeClock) -> None:
    """Several whitelisted IPs come back as one string; none is the empty string."""
    bitget.update_key(KEY, ips=["127.0.0.1", "203.0.113.10"])
    assert call(bitget, signed_headers(bitget.server_time_ms()))[1]["data"]["ips"] == (
        "127.0.0.1,203.0.113.10"
    )
    bitget.update_key(KEY, ips=[])
    clock.advance(1)  # the endpoint allows 1 request/s
    assert call(bitget, signed_headers(bitget.server_time_ms()))[1]["data"]["ips"] == ""


def test_server_time(bitget: BitgetSimulator) -> None:
    """GET /api/v2/public/time answers serverTime (ms, a string), skew included."""
    bitget.clock_skew_ms = 5000
    status, body = call(bitget, {}, target="/api/v2/public/time")
    assert status == 200
    assert body["data"]["serverTime"] == str(bitget.server_time_ms())


@pytest.mark.parametrize(
    ("offset", "ok"), [(-30_000, True), (30_000, True), (-30_001, False), (30_001, False)]
)
def test_timestamp_window(bitget: BitgetSimulator, offset: int, ok: bool) -> None:
    """Timestamps more than 30 s from server time are 40008."""
    status, body = call(bitget, signed_headers(bitget.server_time_ms() + offset))
    assert (body["code"] == "00000") is ok
    if not ok:
        assert (status, body["code"]) == (400, "40008")


def test_wrong_secret_is_40009(bitget: BitgetSimulator) -> None:
    """A signature under another secret is 40009."""
    status, body = call(bitget, signed_headers(bitget.server_time_ms(), secret="nope"))
    assert (status, body["code"]) == (400, "40009")


def test_signature_covers_the_exact_query(bitget: BitgetSimulator) -> None:
    """The query joins the pre-hash as ``?query``; signing without it fails."""
    now = bitget.server_time_ms()
    good = call(bitget, signed_headers(now, query="x=1"), target=f"{PATH}?x=1")
    assert good[1]["code"] == "00000"
    bad = call(bitget, signed_headers(now), target=f"{PATH}?x=1")
    assert bad[1]["code"] == "40009"


def test_wrong_passphrase_is_40012(bitget: BitgetSimulator) -> None:
    """A wrong passphrase is 40012."""
    status, body = call(bitget, signed_headers(bitget.server_time_ms(), passphrase="nope"))
    assert (status, body["code"]) == (400, "40012")


def test_unknown_and_deleted_keys_are_40006(bitget: BitgetSimulator) -> None:
    """Unknown keys and deleted keys are 40006."""
    assert call(bitget, signed_headers(bitget.server_time_ms(), key="other"))[1]["code"] == "40006"
    bitget.delete_key(KEY)
    assert call(bitget, signed_headers(bitget.server_time_ms()))[1]["code"] == "40006"


def test_ip_outside_the_whitelist_is_40018(bitget: BitgetSimulator) -> None:
    """A client IP outside the key's whitelist is 40018; no whitelist allows every IP."""
    status, body = call(bitget, signed_headers(bitget.server_time_ms()), ip="10.0.0.1")
    assert (status, body["code"]) == (400, "40018")
    bitget.update_key(KEY, ips=[])
    assert call(bitget, signed_headers(bitget.server_time_ms()), ip="10.0.0.1")[0] == 200


@pytest.mark.parametrize(
    ("drop", "code"),
    [
        ("ACCESS-KEY", "40001"),
        ("ACCESS-SIGN", "40003"),
        ("ACCESS-PASSPHRASE", "40011"),
        ("ACCESS-TIMESTAMP", "40005"),
    ],
)
def test_missing_headers(bitget: BitgetSimulator, drop: str, code: str) -> None:
    """A missing ACCESS-* header is refused with its code (ccxt's map)."""
    headers = signed_headers(bitget.server_time_ms())
    del headers[drop]
    assert call(bitget, headers)[1]["code"] == code


def test_rate_limit_is_one_per_second(bitget: BitgetSimulator, clock: FakeClock) -> None:
    """The second call within one second is HTTP 429, code 429; the next second is fine."""
    clock.now = float(int(clock.now))
    assert call(bitget, signed_headers(bitget.server_time_ms()))[0] == 200
    status, body = call(bitget, signed_headers(bitget.server_time_ms()))
    assert (status, body["code"]) == (429, "429")
    assert bitget.count_429 == 1
    clock.advance(1)
    assert call(bitget, signed_headers(bitget.server_time_ms()))[0] == 200


def test_faults(bitget: BitgetSimulator) -> None:
    """fail_next answers non-JSON with the status; truncate_next cuts the body."""
    bitget.fail_next(1, 502)
    assert call(bitget, signed_headers(bitget.server_time_ms()))[0] == 502
    bitget.truncate_next(1)
    _status, body = call(bitget, signed_headers(bitget.server_time_ms()))
    assert isinstance(body, bytes)
    assert bitget.request_count(KEY) == 2


def test_admin_api_served_for_real(bitget: BitgetSimulator) -> None:
    """The admin API works over a real socket and never returns secrets or passphrases."""
    with bitget.serve_in_thread() as url, httpx.Client(base_url=url) as client:
        created = client.post(
            "/_simulator/keys",
            json={"api_key": "k2", "secret": "s2", "passphrase": "p2", "ips": []},
        )
        assert created.status_code == 201
        assert "s2" not in created.text
        assert "p2" not in created.text
        patched = client.patch("/_simulator/keys/k2", json={"authorities": ["stor", "wwow"]})
        assert patched.json()["authorities"] == ["stor", "wwow"]
        assert (
            client.post("/_simulator/faults", json={"clock_skew_ms": 5}).json()["clock_skew_ms"]
            == 5
        )
        response = client.get(
            PATH,
            headers=signed_headers(bitget.server_time_ms(), key="k2", secret="s2", passphrase="p2"),
        )
        assert response.json()["code"] == "00000"
        assert response.json()["data"]["authorities"] == ["stor", "wwow"]
        assert client.delete("/_simulator/keys/k2").status_code == 200
        assert client.get("/_simulator/stats").json()["requests"]["k2"] == 1
        assert client.post("/_simulator/faults", json={"bogus": 1}).status_code == 400

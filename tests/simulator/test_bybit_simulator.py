"""Tests for the Bybit simulator: signing, the recv window, errors, limits, faults and serving.

Requests are signed by the helper below (not by keymon's adapter), so the simulator is checked
against Bybit's documented rules (exchange-apis.md §2.1) only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from keymon.simulator.bybit import BybitSimulator, prehash, sign
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"


def signed_headers(
    now_ms: int, *, key: str = KEY, secret: str = SECRET, window: str = "5000", query: str = ""
) -> dict[str, str]:
    """The four X-BAPI headers, computed independently of keymon's adapter."""
    text = f"{now_ms}{key}{window}{query}"
    signature = hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    return {
        "X-BAPI-API-KEY": key,
        "X-BAPI-TIMESTAMP": str(now_ms),
        "X-BAPI-RECV-WINDOW": window,
        "X-BAPI-SIGN": signature,
    }


@pytest.fixture
def bybit(clock: FakeClock) -> BybitSimulator:
    """A simulator on the fake clock holding the derived-vector key, bound to 127.0.0.1."""
    simulator = BybitSimulator(clock=clock)
    simulator.add_key(KEY, SECRET)
    return simulator


def call(
    sim: BybitSimulator, headers: dict[str, str], *, ip: str = "127.0.0.1", path: str = ""
) -> tuple[int, Any, httpx.Headers]:
    """GET query-api (or ``path``) in-process; returns status, parsed body and headers."""
    with httpx.Client(transport=_Sync(sim, ip), base_url="http://bybit.test") as client:
        response = client.get(path or "/v5/user/query-api", headers=headers)
    try:
        body = json.loads(response.content)
    except ValueError:
        body = response.content
    return response.status_code, body, response.headers


class _Sync(httpx.BaseTransport):
    """A minimal sync transport onto ``BybitSimulator.handle``."""

    def __init__(self, sim: BybitSimulator, ip: str) -> None:
        self._sim, self._ip = sim, ip

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path, _, query = request.url.raw_path.decode().partition("?")
        sim = self._sim.handle(
            request.method, path, query, request.read(), request.headers, self._ip
        )
        return httpx.Response(sim.status, headers=sim.headers, content=sim.body)


def test_derived_signature_vector() -> None:
    """Derived (not official) vector of exchange-apis.md §2.1: Bybit publishes no usable one."""
    text = prehash("1700000000000", "testkey", "5000", "")
    assert text == "1700000000000testkey5000"
    assert sign("testsecret", text) == (
        "2fc9e776b3f07b2ee447067e0f627438055b198bb14dba79e1a3d50e40a5bd8d"
    )


def test_valid_request_answers_the_documented_envelope(bybit: BybitSimulator) -> None:
    """A correctly signed call gets retCode 0 and the apikey-info fields for the caller."""
    status, body, headers = call(bybit, signed_headers(bybit.server_time_ms()))
    assert status == 200
    assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
    assert body["retCode"] == 0
    result = body["result"]
    assert result["apiKey"] == KEY
    assert result["secret"] == ""
    assert result["ips"] == ["127.0.0.1"]
    assert result["permissions"]["Spot"] == ["SpotTrade"]
    assert result["expiredAt"] == "1970-01-01T00:00:00Z"  # IP-bound keys do not expire
    assert headers["X-Bapi-Limit"] == "10"


def test_unbound_key_expires_after_90_days(bybit: BybitSimulator, clock: FakeClock) -> None:
    """A key with no IP bound shows an expiry 90 days out, then answers 10003."""
    bybit.add_key("unbound", SECRET, ips=["*"])
    clock.advance(3600)
    _, body, _ = call(bybit, signed_headers(bybit.server_time_ms(), key="unbound"))
    assert body["result"]["deadlineDay"] == 89
    assert body["result"]["ips"] == ["*"]
    clock.advance(90 * 86400)
    _, body, _ = call(bybit, signed_headers(bybit.server_time_ms(), key="unbound"))
    assert body["retCode"] == 10003


@pytest.mark.parametrize(
    ("offset", "ok"), [(-5000, True), (-5001, False), (999, True), (1000, False)]
)
def test_recv_window_bounds(bybit: BybitSimulator, offset: int, ok: bool) -> None:
    """server_time - recv_window <= timestamp < server_time + 1000, exactly."""
    _, body, _ = call(bybit, signed_headers(bybit.server_time_ms() + offset))
    assert body["retCode"] == (0 if ok else 10002)


def test_wrong_secret_is_10004(bybit: BybitSimulator) -> None:
    """A signature made with another secret is a signature error."""
    _, body, _ = call(bybit, signed_headers(bybit.server_time_ms(), secret="other"))
    assert body["retCode"] == 10004


def test_signature_covers_the_exact_query(bybit: BybitSimulator) -> None:
    """A query string that was not signed breaks the signature."""
    headers = signed_headers(bybit.server_time_ms())
    _, body, _ = call(bybit, headers, path="/v5/user/query-api?x=1")
    assert body["retCode"] == 10004
    headers = signed_headers(bybit.server_time_ms(), query="x=1")
    _, body, _ = call(bybit, headers, path="/v5/user/query-api?x=1")
    assert body["retCode"] == 0


def test_unknown_and_deleted_keys_are_10003(bybit: BybitSimulator) -> None:
    """Unknown keys and deleted keys both answer 10003."""
    _, body, _ = call(bybit, signed_headers(bybit.server_time_ms(), key="nobody"))
    assert body["retCode"] == 10003
    bybit.delete_key(KEY)
    _, body, _ = call(bybit, signed_headers(bybit.server_time_ms()))
    assert body["retCode"] == 10003


def test_unbound_ip_is_10010(bybit: BybitSimulator) -> None:
    """A client IP that is not bound to the key is refused with 10010."""
    _, body, _ = call(bybit, signed_headers(bybit.server_time_ms()), ip="198.51.100.7")
    assert body["retCode"] == 10010


def test_missing_headers_are_http_401(bybit: BybitSimulator) -> None:
    """Requests without the auth headers get HTTP 401."""
    status, _, _ = call(bybit, {})
    assert status == 401


def test_key_rate_limit_is_10006_with_headers(bybit: BybitSimulator) -> None:
    """The eleventh call in one second gets 10006 and the reset timestamp header."""
    now = bybit.server_time_ms()
    for _ in range(10):
        assert call(bybit, signed_headers(now))[1]["retCode"] == 0
    _, body, headers = call(bybit, signed_headers(now))
    assert body["retCode"] == 10006
    assert headers["X-Bapi-Limit-Status"] == "0"
    assert int(headers["X-Bapi-Limit-Reset-Timestamp"]) > now
    assert bybit.count_10006 == 1


def test_ip_limit_is_http_403_for_ten_minutes(clock: FakeClock) -> None:
    """Over the per-IP limit the IP gets HTTP 403 until ten minutes have passed."""
    sim = BybitSimulator(clock=clock, ip_limit_per_5s=2)
    for _ in range(2):
        assert call(sim, {}, path="/v5/market/time")[0] == 200
    assert call(sim, {}, path="/v5/market/time")[0] == 403
    clock.advance(599)
    assert call(sim, {}, path="/v5/market/time")[0] == 403
    clock.advance(2)
    assert call(sim, {}, path="/v5/market/time")[0] == 200


def test_server_time_includes_skew(bybit: BybitSimulator) -> None:
    """/v5/market/time answers the skewed server time in the envelope and in result."""
    bybit.clock_skew_ms = 7000
    _, body, _ = call(bybit, {}, path="/v5/market/time")
    assert body["time"] == bybit.server_time_ms()
    assert int(body["result"]["timeSecond"]) == bybit.server_time_ms() // 1000


def test_faults(bybit: BybitSimulator) -> None:
    """fail_next answers a non-JSON error page; truncate_next cuts the body."""
    bybit.fail_next(1, 502)
    assert call(bybit, {}, path="/v5/market/time")[0] == 502
    bybit.truncate_next(1)
    status, body, _ = call(bybit, {}, path="/v5/market/time")
    assert status == 200
    assert isinstance(body, bytes)


def test_uta_keys_carry_derivatives_by_default(bybit: BybitSimulator) -> None:
    """A unified-account key has Derivatives: [DerivativesTrade], as the docs say."""
    bybit.add_key("utakey", SECRET, uta=True)
    _, body, _ = call(bybit, signed_headers(bybit.server_time_ms(), key="utakey"))
    assert body["result"]["permissions"]["Derivatives"] == ["DerivativesTrade"]
    assert body["result"]["uta"] == 1


def test_admin_api_served_for_real(bybit: BybitSimulator) -> None:
    """The admin API and the exchange answer over a real socket."""
    with bybit.serve_in_thread() as url, httpx.Client(base_url=url) as client:
        created = client.post(
            "/_simulator/keys", json={"api_key": "k2", "secret": "s2", "ips": ["*"]}
        )
        assert created.status_code == 201
        assert "s2" not in created.text
        assert (
            client.post("/_simulator/faults", json={"clock_skew_ms": 5}).json()["clock_skew_ms"]
            == 5
        )
        response = client.get(
            "/v5/user/query-api",
            headers=signed_headers(bybit.server_time_ms(), key="k2", secret="s2"),
        )
        assert response.json()["retCode"] == 0
        assert client.delete("/_simulator/keys/k2").status_code == 200
        assert client.get("/_simulator/stats").json()["requests"]["k2"] == 1

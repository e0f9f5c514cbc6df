"""Tests for the KuCoin simulator: signing, the passphrase, the 5 s window, errors, limits,
faults and serving.

Requests are signed by the helper below (not by keymon's adapter), so the simulator is checked
against KuCoin's documented rules (exchange-apis.md §2.3) only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from keymon.simulator.kucoin import KucoinSimulator, mask, sign
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
PASSPHRASE = "testpass"
PATH = "/api/v1/user/api-key"


def _b64hmac(secret: str, text: str) -> str:
    return base64.b64encode(
        hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    ).decode()


def signed_headers(
    now_ms: int,
    *,
    key: str = KEY,
    secret: str = SECRET,
    passphrase: str = PASSPHRASE,
    endpoint: str = PATH,
    version: str = "3",
) -> dict[str, str]:
    """The five KC-API headers, computed independently of keymon's adapter."""
    return {
        "KC-API-KEY": key,
        "KC-API-TIMESTAMP": str(now_ms),
        "KC-API-SIGN": _b64hmac(secret, f"{now_ms}GET{endpoint}"),
        "KC-API-PASSPHRASE": _b64hmac(secret, passphrase),
        "KC-API-KEY-VERSION": version,
    }


@pytest.fixture
def kucoin(clock: FakeClock) -> KucoinSimulator:
    """A simulator on the fake clock holding the derived-vector key, whitelisted to 127.0.0.1."""
    simulator = KucoinSimulator(clock=clock)
    simulator.add_key(KEY, SECRET, PASSPHRASE)
    return simulator


def call(
    sim: KucoinSimulator, headers: dict[str, str], *, ip: str = "127.0.0.1", path: str = PATH
) -> tuple[int, Any, httpx.Headers]:
    """GET ``path`` in-process; returns status, parsed body and headers."""
    with httpx.Client(transport=_Sync(sim, ip), base_url="http://kucoin.test") as client:
        response = client.get(path, headers=headers)
    try:
        body = json.loads(response.content)
    except ValueError:
        body = response.content
    return response.status_code, body, response.headers


class _Sync(httpx.BaseTransport):
    """A minimal sync transport onto ``KucoinSimulator.handle``."""

    def __init__(self, sim: KucoinSimulator, ip: str) -> None:
        self._sim, self._ip = sim, ip

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path, _, query = request.url.raw_path.decode().partition("?")
        sim = self._sim.handle(
            request.method, path, query, request.read(), request.headers, self._ip
        )
        return httpx.Response(sim.status, headers=sim.headers, content=sim.body)


def test_official_sdk_vector() -> None:
    """Official vector of the universal SDK's signing test (exchange-apis.md §2.3)."""
    assert sign("test_api_secret", "test_plain") == "jie/gxS38wLFFaBwl/cAzFbAzlI8MIny96jSXrB+iP4="


def test_derived_vectors() -> None:
    """Derived (not official) vectors of exchange-apis.md §2.3: signature and passphrase."""
    assert sign(SECRET, "1700000000000GET/api/v1/user/api-key") == (
        "lmSswjjoK8koCY5pq8gc9C+f5/LbLv9UPdGcg8OVnHc="
    )
    assert sign(SECRET, PASSPHRASE) == "5geeOuzPRVAMNghwj4ECAxLPxLiO667f7Kkx53zWBsc="


def test_valid_request_answers_the_documented_envelope(
    kucoin: KucoinSimulator, clock: FakeClock
) -> None:
    """code 200000 and the documented fields; the whitelist comes back masked."""
    kucoin.update_key(KEY, ips=["127.0.0.1", "203.0.113.10"])
    status, body, _ = call(kucoin, signed_headers(kucoin.server_time_ms()))
    assert status == 200
    assert body["code"] == "200000"
    data = body["data"]
    assert data["apiKey"] == KEY
    assert data["apiVersion"] == 3
    assert data["permission"] == "General,Spot"
    assert data["ipWhitelist"] == "127.**.1,203.**.10"
    assert data["createdAt"] == round(clock.now * 1000)
    assert {"remark", "uid", "isMaster"} <= set(data)


def test_mask() -> None:
    """The first and last octets stay visible."""
    assert mask("203.0.113.154") == "203.**.154"


def test_server_time_is_data_in_ms(kucoin: KucoinSimulator) -> None:
    """GET /api/v1/timestamp answers the server time (with skew) as data."""
    kucoin.clock_skew_ms = 1234
    status, body, _ = call(kucoin, {}, path="/api/v1/timestamp")
    assert status == 200
    assert body == {"code": "200000", "data": kucoin.server_time_ms()}


@pytest.mark.parametrize(
    ("offset", "ok"), [(-5000, True), (5000, True), (-5001, False), (5001, False)]
)
def test_five_second_window(kucoin: KucoinSimulator, offset: int, ok: bool) -> None:
    """A timestamp more than 5 s from server time is 400002."""
    _, body, _ = call(kucoin, signed_headers(kucoin.server_time_ms() + offset))
    assert body["code"] == ("200000" if ok else "400002")


def test_wrong_secret_is_400004_or_400005(kucoin: KucoinSimulator) -> None:
    """The passphrase is checked signed; a wrong secret fails it first (400004)."""
    now = kucoin.server_time_ms()
    _, body, _ = call(kucoin, signed_headers(now, secret="other"))
    assert body["code"] == "400004"
    headers = signed_headers(now)
    headers["KC-API-SIGN"] = _b64hmac("other", f"{now}GET{PATH}")
    status, body, _ = call(kucoin, headers)
    assert (status, body["code"]) == (401, "400005")


def test_plain_passphrase_and_version_1_are_refused(kucoin: KucoinSimulator) -> None:
    """Version 2/3 keys need the passphrase HMAC-signed."""
    now = kucoin.server_time_ms()
    headers = signed_headers(now)
    headers["KC-API-PASSPHRASE"] = PASSPHRASE
    assert call(kucoin, headers)[1]["code"] == "400004"
    assert call(kucoin, signed_headers(now, version="1"))[1]["code"] == "400004"


def test_signature_covers_the_exact_query(kucoin: KucoinSimulator) -> None:
    """The endpoint signed includes ?query exactly as sent."""
    now = kucoin.server_time_ms()
    headers = signed_headers(now, endpoint=PATH + "?a=1")
    assert call(kucoin, headers, path=PATH + "?a=1")[1]["code"] == "200000"
    assert call(kucoin, signed_headers(now), path=PATH + "?a=1")[1]["code"] == "400005"


def test_unknown_and_deleted_keys_are_400003(kucoin: KucoinSimulator) -> None:
    """A key KuCoin does not know answers 400003."""
    now = kucoin.server_time_ms()
    assert call(kucoin, signed_headers(now, key="nope"))[1]["code"] == "400003"
    kucoin.delete_key(KEY)
    assert call(kucoin, signed_headers(now))[1]["code"] == "400003"


def test_ip_outside_the_whitelist_is_400006(kucoin: KucoinSimulator) -> None:
    """The refused client IP is named in the message; an empty whitelist accepts any IP."""
    _, body, _ = call(kucoin, signed_headers(kucoin.server_time_ms()), ip="10.9.9.9")
    assert body["code"] == "400006"
    assert "10.9.9.9" in body["msg"]
    kucoin.update_key(KEY, ips=[])
    _, body, _ = call(kucoin, signed_headers(kucoin.server_time_ms()), ip="10.9.9.9")
    assert body["code"] == "200000"
    assert body["data"]["ipWhitelist"] == ""


def test_missing_headers_and_missing_general(kucoin: KucoinSimulator) -> None:
    """No headers: 400001. Without General the endpoint answers 400007."""
    assert call(kucoin, {})[1]["code"] == "400001"
    kucoin.update_key(KEY, permissions=["Spot"])
    assert call(kucoin, signed_headers(kucoin.server_time_ms()))[1]["code"] == "400007"


def test_rate_limit_is_429000_with_headers(clock: FakeClock) -> None:
    """Weight 20 per call; past the pool the answer is HTTP 429 with code 429000."""
    sim = KucoinSimulator(clock=clock, pool_limit=40)
    sim.add_key(KEY, SECRET, PASSPHRASE)
    codes = [call(sim, signed_headers(sim.server_time_ms()))[1]["code"] for _ in range(3)]
    assert codes == ["200000", "200000", "429000"]
    status, _, headers = call(sim, signed_headers(sim.server_time_ms()))
    assert status == 429
    assert headers["gw-ratelimit-remaining"] == "0"
    assert sim.count_429000 == 2
    clock.advance(30)
    assert call(sim, signed_headers(sim.server_time_ms()))[1]["code"] == "200000"


def test_faults(kucoin: KucoinSimulator) -> None:
    """fail_next and truncate_next act on the next answers only."""
    kucoin.fail_next(1, 502)
    assert call(kucoin, signed_headers(kucoin.server_time_ms()))[0] == 502
    kucoin.truncate_next(1)
    _, body, _ = call(kucoin, signed_headers(kucoin.server_time_ms()))
    assert isinstance(body, bytes)
    assert call(kucoin, signed_headers(kucoin.server_time_ms()))[1]["code"] == "200000"


def test_admin_api_served_for_real(kucoin: KucoinSimulator) -> None:
    """Keys and faults through the admin API of a served simulator; no secret comes back."""
    with kucoin.serve_in_thread() as base_url, httpx.Client(base_url=base_url) as client:
        created = client.post(
            "/_simulator/keys",
            json={"api_key": "k2", "secret": "s2", "passphrase": "p2", "version": 2},
        )
        assert created.status_code == 201
        assert "s2" not in created.text
        assert "p2" not in created.text
        patched = client.patch("/_simulator/keys/k2", json={"permissions": ["General", "Transfer"]})
        assert patched.json()["permissions"] == ["General", "Transfer"]
        faults = client.post("/_simulator/faults", json={"clock_skew_ms": 7})
        assert faults.json()["clock_skew_ms"] == 7
        assert client.delete("/_simulator/keys/k2").status_code == 200
        assert client.get("/_simulator/stats").status_code == 200
        assert client.post("/_simulator/faults", json={"nope": 1}).status_code == 400

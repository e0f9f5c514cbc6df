"""Tests for the OKX simulator: signing, the passphrase, the 30 s window, errors, limits,
faults and serving.

Requests are signed by the helper below (not by keymon's adapter), so the simulator is checked
against OKX's documented rules (exchange-apis.md §2.2) only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from keymon.simulator.okx import OkxSimulator, prehash, sign
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
PASSPHRASE = "testpass"
CONFIG = "/api/v5/account/config"


def iso(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, written independently of keymon."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def signed_headers(
    now_ms: int,
    *,
    key: str = KEY,
    secret: str = SECRET,
    passphrase: str = PASSPHRASE,
    request_path: str = CONFIG,
) -> dict[str, str]:
    """The four OK-ACCESS headers, computed independently of keymon's adapter."""
    timestamp = iso(now_ms)
    text = f"{timestamp}GET{request_path}"
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return {
        "OK-ACCESS-KEY": key,
        "OK-ACCESS-TIMESTAMP": timestamp,
        "OK-ACCESS-PASSPHRASE": passphrase,
        "OK-ACCESS-SIGN": base64.b64encode(digest).decode(),
    }


@pytest.fixture
def okx(clock: FakeClock) -> OkxSimulator:
    """A simulator on the fake clock holding the guide's key, bound to 127.0.0.1."""
    simulator = OkxSimulator(clock=clock)
    simulator.add_key(KEY, SECRET, PASSPHRASE)
    return simulator


def now_ms(clock: FakeClock) -> int:
    return round(clock.now * 1000)


def call(
    sim: OkxSimulator, headers: dict[str, str], *, ip: str = "127.0.0.1", path: str = CONFIG
) -> tuple[int, Any]:
    """GET account/config (or ``path``) in-process; returns status and parsed body."""
    with httpx.Client(transport=_Sync(sim, ip), base_url="http://okx.test") as client:
        response = client.get(path, headers=headers)
    try:
        body = json.loads(response.content)
    except ValueError:
        body = response.content
    return response.status_code, body


class _Sync(httpx.BaseTransport):
    """A minimal sync transport onto ``OkxSimulator.handle``."""

    def __init__(self, sim: OkxSimulator, ip: str) -> None:
        self._sim, self._ip = sim, ip

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path, _, query = request.url.raw_path.decode().partition("?")
        sim = self._sim.handle(
            request.method, path, query, request.read(), request.headers, self._ip
        )
        return httpx.Response(sim.status, headers=sim.headers, content=sim.body)


def test_derived_signature_vector() -> None:
    """Derived (not official) vector of exchange-apis.md §2.2: the OKX docs give none."""
    text = prehash("2023-11-14T22:13:20.000Z", "GET", CONFIG, "")
    assert text == "2023-11-14T22:13:20.000ZGET/api/v5/account/config"
    assert sign("testsecret", text) == "wMtvZ0zkRT5cgEHcJps8w6jHjcH+ZxrPtkbynwRWsjo="


def test_server_time(okx: OkxSimulator, clock: FakeClock) -> None:
    """public/time answers the envelope with ts in ms, unsigned."""
    status, body = call(okx, {}, path="/api/v5/public/time")
    assert status == 200
    assert body == {"code": "0", "msg": "", "data": [{"ts": str(now_ms(clock))}]}


def test_signed_request_answers_the_documented_fields(okx: OkxSimulator, clock: FakeClock) -> None:
    """A good request gets the envelope with perm and ip as comma strings."""
    status, body = call(okx, signed_headers(now_ms(clock)))
    assert status == 200
    assert body["code"] == "0"
    (config,) = body["data"]
    assert config["perm"] == "read_only,trade"
    assert config["ip"] == "127.0.0.1"
    assert config["uid"] == config["mainUid"]
    assert "createTime" not in config
    assert "expireTime" not in config


def test_unbound_key_shows_an_empty_ip(okx: OkxSimulator, clock: FakeClock) -> None:
    """No IP bound: ``ip`` is "" and any client IP is accepted."""
    okx.update_key(KEY, ips=[])
    status, body = call(okx, signed_headers(now_ms(clock)), ip="192.0.2.7")
    assert status == 200
    assert body["data"][0]["ip"] == ""


def test_cidr_and_ipv6_whitelist(okx: OkxSimulator, clock: FakeClock) -> None:
    """Whitelist entries may be CIDR ranges or IPv6."""
    okx.update_key(KEY, ips=["10.0.0.0/8", "2001:db8::1"])
    assert call(okx, signed_headers(now_ms(clock)), ip="10.1.2.3")[0] == 200
    assert call(okx, signed_headers(now_ms(clock)), ip="2001:db8::1")[0] == 200
    assert call(okx, signed_headers(now_ms(clock)), ip="192.0.2.1")[1]["code"] == "50110"


@pytest.mark.parametrize(
    ("missing", "code"),
    [
        ("OK-ACCESS-KEY", "50103"),
        ("OK-ACCESS-PASSPHRASE", "50104"),
        ("OK-ACCESS-SIGN", "50106"),
        ("OK-ACCESS-TIMESTAMP", "50107"),
    ],
)
def test_empty_header_codes(okx: OkxSimulator, clock: FakeClock, missing: str, code: str) -> None:
    """Each required header, when empty, has its own code."""
    headers = signed_headers(now_ms(clock))
    headers[missing] = ""
    status, body = call(okx, headers)
    assert status == 401
    assert body["code"] == code


def test_timestamp_window_is_30_seconds(okx: OkxSimulator, clock: FakeClock) -> None:
    """29 s off is accepted either way; 31 s off is 50102."""
    now = now_ms(clock)
    assert call(okx, signed_headers(now - 29_000))[0] == 200
    assert call(okx, signed_headers(now + 29_000))[0] == 200
    assert call(okx, signed_headers(now - 31_000))[1]["code"] == "50102"
    assert call(okx, signed_headers(now + 31_000))[1]["code"] == "50102"


def test_malformed_timestamp_is_50112(okx: OkxSimulator, clock: FakeClock) -> None:
    """A timestamp in ms (Bybit style) is not ISO 8601: 50112."""
    headers = signed_headers(now_ms(clock))
    headers["OK-ACCESS-TIMESTAMP"] = str(now_ms(clock))
    assert call(okx, headers)[1]["code"] == "50112"


def test_wrong_passphrase_is_50105(okx: OkxSimulator, clock: FakeClock) -> None:
    """The passphrase is checked: wrong is 50105."""
    assert call(okx, signed_headers(now_ms(clock), passphrase="nope"))[1]["code"] == "50105"


def test_wrong_secret_is_50113(okx: OkxSimulator, clock: FakeClock) -> None:
    """A signature under another secret is 50113."""
    assert call(okx, signed_headers(now_ms(clock), secret="other"))[1]["code"] == "50113"


def test_signature_covers_the_query(okx: OkxSimulator, clock: FakeClock) -> None:
    """requestPath includes ``?query``: signing the bare path for a query request fails."""
    headers = signed_headers(now_ms(clock))
    assert call(okx, headers, path=CONFIG + "?x=1")[1]["code"] == "50113"
    good = signed_headers(now_ms(clock), request_path=CONFIG + "?x=1")
    assert call(okx, good, path=CONFIG + "?x=1")[0] == 200


def test_deleted_key_is_50111(okx: OkxSimulator, clock: FakeClock) -> None:
    """A deleted (or unknown) key is 50111."""
    okx.delete_key(KEY)
    status, body = call(okx, signed_headers(now_ms(clock)))
    assert (status, body["code"]) == (401, "50111")


def test_ip_refusal_names_the_ip(okx: OkxSimulator, clock: FakeClock) -> None:
    """50110, HTTP 401, and the message names the refused IP."""
    status, body = call(okx, signed_headers(now_ms(clock)), ip="198.51.100.9")
    assert status == 401
    assert body["code"] == "50110"
    assert body["msg"] == ("Your IP 198.51.100.9 is not included in your API key's IP whitelist.")


def test_key_without_read_is_50120(okx: OkxSimulator, clock: FakeClock) -> None:
    """account/config needs the Read permission."""
    okx.update_key(KEY, perm=["trade"])
    assert call(okx, signed_headers(now_ms(clock)))[1]["code"] == "50120"


def test_rate_limit_5_per_2s(okx: OkxSimulator, clock: FakeClock) -> None:
    """The sixth call within 2 s is 50011 (HTTP 429); the next window is open again."""
    for _ in range(5):
        assert call(okx, signed_headers(now_ms(clock)))[0] == 200
    status, body = call(okx, signed_headers(now_ms(clock)))
    assert (status, body["code"]) == (429, "50011")
    assert okx.count_50011 == 1
    clock.advance(2)
    assert call(okx, signed_headers(now_ms(clock)))[0] == 200


def test_key_validation() -> None:
    """Unknown permissions, bad IPs and more than 20 IPs are refused."""
    sim = OkxSimulator()
    with pytest.raises(ValueError, match="permissions"):
        sim.add_key("a", "s", "p", perm=["read_only", "fly"])
    with pytest.raises(ValueError, match="not-an-ip"):
        sim.add_key("b", "s", "p", ips=["not-an-ip"])
    with pytest.raises(ValueError, match="20"):
        sim.add_key("c", "s", "p", ips=[f"10.0.0.{i}" for i in range(21)])


def test_faults(okx: OkxSimulator, clock: FakeClock) -> None:
    """fail_next, busy_next, truncate_next, clock skew and latency."""
    okx.fail_next(1, 502)
    assert call(okx, signed_headers(now_ms(clock)))[0] == 502
    okx.busy_next(1)
    status, body = call(okx, signed_headers(now_ms(clock)))
    assert (status, body["code"]) == (429, "50013")
    okx.truncate_next(1)
    assert isinstance(call(okx, signed_headers(now_ms(clock)))[1], bytes)
    okx.clock_skew_ms = 60_000
    assert call(okx, signed_headers(now_ms(clock)))[1]["code"] == "50102"
    okx.latency = 0.25
    assert okx.handle("GET", "/api/v5/public/time", "", b"", {}, "127.0.0.1").delay == 0.25


def test_admin_api_and_serving(clock: FakeClock) -> None:
    """Keys and faults over the admin API, on a real port; secrets never come back."""
    sim = OkxSimulator(clock=clock)
    with sim.serve_in_thread() as base_url, httpx.Client(base_url=base_url) as client:
        created = client.post(
            "/_simulator/keys",
            json={"api_key": KEY, "secret": SECRET, "passphrase": PASSPHRASE, "ips": []},
        )
        assert created.status_code == 201
        assert SECRET not in created.text
        assert PASSPHRASE not in created.text
        ok = client.get(CONFIG, headers=signed_headers(now_ms(clock)))
        assert ok.json()["code"] == "0"
        patched = client.patch(f"/_simulator/keys/{KEY}", json={"perm": ["read_only"]})
        assert patched.json()["perm"] == ["read_only"]
        faults = client.post("/_simulator/faults", json={"fail_next": 1})
        assert faults.json()["fail_next"] == 1
        assert client.get(CONFIG, headers=signed_headers(now_ms(clock))).status_code == 503
        assert client.post("/_simulator/faults", json={"bogus": 1}).status_code == 400
        stats = client.get("/_simulator/stats").json()
        assert stats["requests"][KEY] == 2
        assert client.delete(f"/_simulator/keys/{KEY}").status_code == 200
        gone = client.get(CONFIG, headers=signed_headers(now_ms(clock)))
        assert gone.json()["code"] == "50111"

"""The Coinbase simulator on its own: server time, limits, faults and key management.

JWT verification is exercised against keymon's signer in tests/exchanges/test_coinbase.py; here
tokens are built with PyJWT directly, as any Coinbase client would.
"""

from __future__ import annotations

import json
import secrets

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from keymon.simulator.coinbase import (
    PERMISSIONS_PATH,
    TIME_PATH,
    CoinbaseSimulator,
    new_key_pair,
)
from tests.conftest import FakeClock

NAME = (
    "organizations/0000aaaa-0000-4000-8000-000000000001/"
    "apiKeys/0000bbbb-0000-4000-8000-000000000002"
)


def bearer(
    private_pem: str, now: int, host: str = "api.coinbase.com", name: str = NAME
) -> dict[str, str]:
    """Headers for one key_permissions call, built like Coinbase's own Python sample."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    token = jwt.encode(
        {
            "sub": name,
            "iss": "cdp",
            "nbf": now,
            "exp": now + 120,
            "uri": f"GET {host}{PERMISSIONS_PATH}",
        },
        key,  # type: ignore[arg-type]
        algorithm="ES256",
        headers={"kid": name, "nonce": secrets.token_hex()},
    )
    return {"Authorization": f"Bearer {token}", "Host": host}


@pytest.fixture
def sim(clock: FakeClock) -> CoinbaseSimulator:
    return CoinbaseSimulator(clock=clock)


def test_server_time_has_the_documented_fields(sim: CoinbaseSimulator, clock: FakeClock) -> None:
    sim.clock_skew_ms = 1500
    response = sim.handle("GET", TIME_PATH, "", b"", {}, "127.0.0.1")
    body = json.loads(response.body)
    assert body["epochMillis"] == str(int(clock.now * 1000) + 1500)
    assert body["epochSeconds"] == str(int(clock.now) + 1)
    assert body["iso"].endswith("Z")


def test_public_limit_is_per_ip(sim: CoinbaseSimulator) -> None:
    """10 public requests a second per IP; another IP has its own allowance."""
    statuses = [sim.handle("GET", TIME_PATH, "", b"", {}, "127.0.0.1").status for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    assert sim.handle("GET", TIME_PATH, "", b"", {}, "127.0.0.2").status == 200


def test_private_limit_is_per_user_and_resets_each_second(
    sim: CoinbaseSimulator, clock: FakeClock
) -> None:
    private, public = new_key_pair("ES256")
    sim.add_key(NAME, public)
    sim.set_limit(2)
    now = int(clock.now)
    statuses = [
        sim.handle("GET", PERMISSIONS_PATH, "", b"", bearer(private, now), "127.0.0.1").status
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    clock.advance(1)
    ok = sim.handle("GET", PERMISSIONS_PATH, "", b"", bearer(private, now + 1), "127.0.0.1")
    assert ok.status == 200
    assert sim.request_count(NAME) == 4


def test_allowlist_and_updates(sim: CoinbaseSimulator, clock: FakeClock) -> None:
    private, public = new_key_pair("ES256")
    sim.add_key(NAME, public)  # 127.0.0.1 only, by default
    now = int(clock.now)
    assert (
        sim.handle("GET", PERMISSIONS_PATH, "", b"", bearer(private, now), "10.1.1.1").status == 401
    )
    assert sim.last_rejection == "IP not allowed"
    sim.update_key(NAME, ips=[], can_trade=False)
    answer = sim.handle("GET", PERMISSIONS_PATH, "", b"", bearer(private, now), "10.1.1.1")
    assert json.loads(answer.body)["can_trade"] is False
    with pytest.raises(ValueError, match="already exists"):
        sim.add_key(NAME, public)
    # The CDP portal's private key is accepted too: only its public half is kept.
    other = NAME.replace("0000bbbb", "0000cccc")
    sim.add_key(other, private, ips=[])
    headers = bearer(private, now, name=other)
    assert sim.handle("GET", PERMISSIONS_PATH, "", b"", headers, "10.1.1.1").status == 200
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        sim.update_key(NAME, ips=["not-an-ip"])


def test_faults(sim: CoinbaseSimulator) -> None:
    sim.latency = 0.25
    sim.fail_next(1, 502)
    failed = sim.handle("GET", TIME_PATH, "", b"", {}, "127.0.0.1")
    assert (failed.status, failed.delay) == (502, 0.25)
    sim.truncate_next(1)
    cut = sim.handle("GET", TIME_PATH, "", b"", {}, "127.0.0.1")
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.body)


def test_unknown_path_and_method(sim: CoinbaseSimulator) -> None:
    assert sim.handle("GET", "/api/v3/brokerage/accounts", "", b"", {}, "127.0.0.1").status == 404
    assert sim.handle("POST", PERMISSIONS_PATH, "", b"", {}, "127.0.0.1").status == 405


def test_served_over_http_checks_the_host_and_port(
    sim: CoinbaseSimulator, clock: FakeClock
) -> None:
    """On a real port the uri claim must carry host:port, as the Host header does."""
    private, public = new_key_pair("ES256")
    sim.add_key(NAME, public)
    with sim.serve_in_thread() as url, httpx.Client(base_url=url) as client:
        host = httpx.URL(url).netloc.decode()
        good = bearer(private, int(clock.now), host=host)
        good.pop("Host")
        assert client.get(PERMISSIONS_PATH, headers=good).status_code == 200
        bare = bearer(private, int(clock.now))  # uri says api.coinbase.com
        bare.pop("Host")
        assert client.get(PERMISSIONS_PATH, headers=bare).status_code == 401
    assert sim.last_rejection == "uri does not match the request"

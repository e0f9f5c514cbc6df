"""The Bitrue simulator against Bitrue's docs: the doc vectors, the timing rule, and its
answers to hand-signed requests, in-process and over a real port on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from keymon.simulator.bitrue import ACCOUNT_PATH, TIME_PATH, BitrueSimulator, sign
from keymon.simulator.server import SimulatorSyncTransport
from tests.conftest import DOC_API_KEY, DOC_SECRET, FakeClock

B1_PAYLOAD = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
JSON_BODY = (
    '{"symbol":"LTCBTC","side":"BUY","type":"LIMIT","timeInForce":"GTC","price":0.1,'
    '"quantity":1,"timestamp":1499827319559,"recvWindow":5000}'
)


def test_sign_reproduces_b1() -> None:
    assert sign(DOC_SECRET, B1_PAYLOAD) == (
        "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )


def test_sign_reproduces_the_json_body_vector() -> None:
    assert sign(DOC_SECRET, JSON_BODY) == (
        "a96755b9616ffcb19b47f38ee1c8e20bb9ff5ffdd3936ace8f457975fbc91a6a"
    )


def test_sign_reproduces_the_mixed_example_b3() -> None:
    """Doc example 3: query then body with no '&' between them."""
    total = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
        "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    )
    assert sign(DOC_SECRET, total) == (
        "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
    )


@pytest.fixture(params=["in-process", "served"])
def client(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[tuple[Any, Any]]:
    sim = BitrueSimulator(clock=clock)
    sim.add_key(DOC_API_KEY, DOC_SECRET)
    with _client(sim, served=request.param == "served") as c:
        yield sim, c


@contextmanager
def _client(sim: BitrueSimulator, *, served: bool) -> Iterator[httpx.Client]:
    if served:
        with sim.serve_in_thread() as base_url, httpx.Client(base_url=base_url) as c:
            yield c
    else:
        transport = SimulatorSyncTransport(sim.handle, admin_handler=sim.handle_admin)
        with httpx.Client(base_url="http://bitrue.test", transport=transport) as c:
            yield c


def signed_get(c: httpx.Client, ts: int, *, secret: str = DOC_SECRET, key: str = DOC_API_KEY,
               window: int = 5000) -> httpx.Response:  # fmt: skip
    query = f"recvWindow={window}&timestamp={ts}"
    query += "&signature=" + sign(secret, query)
    return c.get(f"{ACCOUNT_PATH}?{query}", headers={"X-MBX-APIKEY": key})


def test_time_is_the_server_clock(client: tuple[Any, httpx.Client], clock: FakeClock) -> None:
    _sim, c = client
    assert c.get(TIME_PATH).json() == {"serverTime": int(clock.now * 1000)}


def test_signed_account_is_accepted(client: tuple[Any, httpx.Client], clock: FakeClock) -> None:
    _sim, c = client
    response = signed_get(c, int(clock.now * 1000))
    assert response.status_code == 200
    assert response.json()["canTrade"] is True


def test_uppercase_signature_is_accepted(
    client: tuple[Any, httpx.Client], clock: FakeClock
) -> None:
    """The docs: the signature is not case sensitive."""
    _sim, c = client
    query = f"timestamp={int(clock.now * 1000)}"
    query += "&signature=" + sign(DOC_SECRET, query).upper()
    response = c.get(f"{ACCOUNT_PATH}?{query}", headers={"X-MBX-APIKEY": DOC_API_KEY})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("offset_ms", "accepted"),
    [(-5000, True), (-5001, False), (999, True), (1000, False)],
    ids=["window-edge", "too-old", "just-ahead", "too-far-ahead"],
)
def test_timing_rule(
    client: tuple[Any, httpx.Client], clock: FakeClock, offset_ms: int, accepted: bool
) -> None:
    """timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow, else -1022."""
    _sim, c = client
    response = signed_get(c, int(clock.now * 1000) + offset_ms)
    if accepted:
        assert response.status_code == 200
    else:
        assert response.status_code == 401
        assert response.json()["code"] == -1022


@pytest.mark.parametrize("case", ["wrong-secret", "unknown-key", "no-key", "frozen", "expired"])
def test_refusals_are_1022(client: tuple[Any, httpx.Client], clock: FakeClock, case: str) -> None:
    sim, c = client
    ts = int(clock.now * 1000)
    if case == "wrong-secret":
        response = signed_get(c, ts, secret="wrong")
    elif case == "unknown-key":
        response = signed_get(c, ts, key="nobody")
    elif case == "no-key":
        response = c.get(f"{ACCOUNT_PATH}?timestamp={ts}&signature=00")
    else:
        sim.update_key(DOC_API_KEY, state=case)
        response = signed_get(c, ts)
    assert response.status_code == 401
    assert response.json()["code"] == -1022


def test_foreign_ip_is_966000(client: tuple[Any, httpx.Client], clock: FakeClock) -> None:
    sim, c = client
    sim.update_key(DOC_API_KEY, ips=["10.9.9.9"])
    response = signed_get(c, int(clock.now * 1000))
    assert response.json() == {"code": 966000, "msg": "Ip limit"}


def test_rate_limit_is_429(client: tuple[Any, httpx.Client], clock: FakeClock) -> None:
    sim, c = client
    sim.set_rate_limit(1, 60)
    assert signed_get(c, int(clock.now * 1000)).status_code == 200
    assert signed_get(c, int(clock.now * 1000)).status_code == 429


def test_body_parameters_are_signed_after_the_query(
    client: tuple[Any, httpx.Client], clock: FakeClock
) -> None:
    """A GET with totalParams split across query and body (the docs allow mixing)."""
    _sim, c = client
    query = "recvWindow=5000"
    body = f"timestamp={int(clock.now * 1000)}"
    signature = sign(DOC_SECRET, query + body)
    response = c.request(
        "GET",
        f"{ACCOUNT_PATH}?{query}",
        content=f"{body}&signature={signature}".encode(),
        headers={"X-MBX-APIKEY": DOC_API_KEY},
    )
    assert response.status_code == 200


def test_clock_skew_knob_moves_server_time(
    client: tuple[Any, httpx.Client], clock: FakeClock
) -> None:
    sim, c = client
    sim.clock_skew_ms = 40_000
    assert c.get(TIME_PATH).json()["serverTime"] == int(clock.now * 1000) + 40_000
    assert signed_get(c, int(clock.now * 1000)).json()["code"] == -1022

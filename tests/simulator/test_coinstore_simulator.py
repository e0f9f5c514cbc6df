"""The Coinstore simulator: §2.13's signing vector, accepted and refused requests, in-process
and over a real port on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from keymon.simulator.coinstore import ACCOUNT_PATH, CoinstoreSimulator, sign
from tests.conftest import FakeClock

KEY = "cs0simKey01"
SECRET = "testsecret"
EXPIRES = "1700000000000"
VECTOR_SIGN = "4dccee9620c7d980a1edea2f29b35d6dac1cdba4994a428b7db3119826315c9e"


def test_sign_reproduces_the_derived_vector() -> None:
    assert sign(SECRET, EXPIRES, b"{}") == VECTOR_SIGN


def headers(
    expires: str = EXPIRES, secret: str = SECRET, key: str = KEY, body: bytes = b"{}"
) -> dict[str, str]:
    return {
        "X-CS-APIKEY": key,
        "X-CS-EXPIRES": expires,
        "X-CS-SIGN": sign(secret, expires, body),
        "Content-Type": "application/json",
    }


@pytest.fixture
def sim() -> CoinstoreSimulator:
    simulator = CoinstoreSimulator(clock=FakeClock(1_700_000_000.0))
    simulator.add_key(KEY, SECRET)
    return simulator


@pytest.fixture(params=["in-process", "served"])
async def client(
    request: pytest.FixtureRequest, sim: CoinstoreSimulator
) -> AsyncIterator[httpx.AsyncClient]:
    with contextlib.ExitStack() as stack:
        if request.param == "served":
            base_url = stack.enter_context(sim.serve_in_thread())
            assert base_url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient(base_url=base_url) as served:
                yield served
        else:
            async with httpx.AsyncClient(
                base_url="http://coinstore.test", transport=sim.transport()
            ) as local:
                yield local


async def test_the_vector_request_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(ACCOUNT_PATH, content=b"{}", headers=headers())
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 0
    assert {entry["typeName"] for entry in body["data"]} == {"AVAILABLE", "FROZEN"}


async def test_the_signature_covers_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(ACCOUNT_PATH, content=b'{"a":1}', headers=headers())
    assert (response.status_code, response.json()) == (
        401,
        {"code": 401, "message": "signature-failed"},
    )


async def test_a_wrong_secret_is_signature_failed(client: httpx.AsyncClient) -> None:
    response = await client.post(ACCOUNT_PATH, content=b"{}", headers=headers(secret="other"))
    assert response.json() == {"code": 401, "message": "signature-failed"}


async def test_a_stamp_from_another_bucket_does_not_verify(client: httpx.AsyncClient) -> None:
    signed = headers()
    signed["X-CS-EXPIRES"] = "1700000030000"
    response = await client.post(ACCOUNT_PATH, content=b"{}", headers=signed)
    assert response.json()["code"] == 401


async def test_an_unknown_key_is_unauthorized(client: httpx.AsyncClient) -> None:
    response = await client.post(ACCOUNT_PATH, content=b"{}", headers=headers(key="nobody"))
    assert (response.status_code, response.json()) == (
        401,
        {"code": 1401, "message": "Unauthorized"},
    )


async def test_missing_headers_are_unauthorized(client: httpx.AsyncClient) -> None:
    response = await client.post(ACCOUNT_PATH, content=b"{}")
    assert response.json()["code"] == 1401


async def test_an_unbound_ip_is_unauthorized(
    client: httpx.AsyncClient, sim: CoinstoreSimulator
) -> None:
    sim.update_key(KEY, ips=["10.9.9.9"])
    response = await client.post(ACCOUNT_PATH, content=b"{}", headers=headers())
    assert response.json() == {"code": 1401, "message": "Unauthorized"}
    sim.update_key(KEY, ips=[])
    response = await client.post(ACCOUNT_PATH, content=b"{}", headers=headers())
    assert response.json()["code"] == 0


@pytest.mark.parametrize("state", ["frozen", "expired", "disabled"])
async def test_unusable_keys_are_unauthorized(
    client: httpx.AsyncClient, sim: CoinstoreSimulator, state: str
) -> None:
    sim.update_key(KEY, state=state)
    response = await client.post(ACCOUNT_PATH, content=b"{}", headers=headers())
    assert response.json()["code"] == 1401


async def test_rate_limit_is_too_many_visits(
    client: httpx.AsyncClient, sim: CoinstoreSimulator
) -> None:
    sim.set_rate_limit(1, 60)
    assert (await client.post(ACCOUNT_PATH, content=b"{}", headers=headers())).status_code == 200
    response = await client.post(ACCOUNT_PATH, content=b"{}", headers=headers())
    assert (response.status_code, response.json()["code"]) == (429, 429)


async def test_other_paths_and_methods_are_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get(ACCOUNT_PATH)).status_code == 405
    missing = await client.post("/api/trade/order/place", content=b"{}", headers=headers())
    assert missing.status_code == 404

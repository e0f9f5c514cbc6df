"""The Biconomy simulator: the docs' signing, accepted and refused requests, in-process and
over a real port on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from keymon.simulator.biconomy import USER_PATH, BiconomySimulator, sign
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
#: Uppercase MD5 of "api_key=testkey&secret_key=testsecret" (derived; no official vector).
KEY_VECTOR = "26C011E5BFD2CF39F1CFE64CC3FC8293"
#: The docs' "Signature Authentication" example, hashed (derived; the docs give no hash).
DOC_VECTOR = "8473A7DE18054C0619A104CB9D36DAA5"
SITE = {"X-SITE-ID": "127"}


def test_sign_reproduces_the_vectors() -> None:
    assert sign({"api_key": KEY}, SECRET) == KEY_VECTOR
    doc = {"market": "BTC_USDT", "side": "1", "price": "50", "amount": "0.02", "api_key": "apiKey"}
    assert sign(doc, "secretKey") == DOC_VECTOR


@pytest.fixture
def sim() -> BiconomySimulator:
    simulator = BiconomySimulator(clock=FakeClock())
    simulator.add_key(KEY, SECRET)
    return simulator


@pytest.fixture(params=["in-process", "served"])
async def client(
    request: pytest.FixtureRequest, sim: BiconomySimulator
) -> AsyncIterator[httpx.AsyncClient]:
    with contextlib.ExitStack() as stack:
        if request.param == "served":
            base_url = stack.enter_context(sim.serve_in_thread())
            assert base_url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient(base_url=base_url) as served:
                yield served
        else:
            async with httpx.AsyncClient(
                base_url="http://biconomy.test", transport=sim.transport()
            ) as local:
                yield local


def form(key: str = KEY, signature: str = KEY_VECTOR) -> dict[str, str]:
    return {"api_key": key, "sign": signature}


async def test_a_signed_form_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(USER_PATH, data=form(), headers=SITE)
    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["message"]) == (0, "successful")
    assert "USDT" in body["result"]


async def test_the_official_sample_s_query_string_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(USER_PATH, params=form(), headers=SITE)
    assert response.json()["code"] == 0


async def test_without_site_id_the_record_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(USER_PATH, data=form())
    assert response.json()["code"] == 10005


async def test_a_wrong_secret_is_refused(client: httpx.AsyncClient) -> None:
    bad = sign({"api_key": KEY}, "other")
    response = await client.post(USER_PATH, data=form(signature=bad), headers=SITE)
    assert (response.status_code, response.json()["code"]) == (200, 1)


async def test_a_lowercase_sign_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(USER_PATH, data=form(signature=KEY_VECTOR.lower()), headers=SITE)
    assert response.json()["code"] == 1


async def test_an_unknown_key_and_a_missing_sign_are_refused(client: httpx.AsyncClient) -> None:
    unknown = sign({"api_key": "nobody"}, SECRET)
    response = await client.post(USER_PATH, data=form("nobody", unknown), headers=SITE)
    assert response.json()["code"] == 1
    response = await client.post(USER_PATH, data={"api_key": KEY}, headers=SITE)
    assert response.json()["code"] == 1


async def test_an_unbound_ip_and_unusable_states_are_refused(
    client: httpx.AsyncClient, sim: BiconomySimulator
) -> None:
    sim.update_key(KEY, ips=["10.9.9.9"])
    assert (await client.post(USER_PATH, data=form(), headers=SITE)).json()["code"] == 1
    sim.update_key(KEY, ips=[], state="frozen")
    assert (await client.post(USER_PATH, data=form(), headers=SITE)).json()["code"] == 1
    sim.update_key(KEY, state="active")
    assert (await client.post(USER_PATH, data=form(), headers=SITE)).json()["code"] == 0


async def test_rate_limit_is_http_429(client: httpx.AsyncClient, sim: BiconomySimulator) -> None:
    sim.set_rate_limit(1, 60)
    assert (await client.post(USER_PATH, data=form(), headers=SITE)).json()["code"] == 0
    assert (await client.post(USER_PATH, data=form(), headers=SITE)).status_code == 429


async def test_other_paths_and_methods_are_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get(USER_PATH)).status_code == 405
    other = await client.post("/api/v1/private/trade/limit", data=form(), headers=SITE)
    assert other.json()["code"] == 4

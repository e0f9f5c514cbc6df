"""The MEXC simulator, checked against exchange-apis.md §2.6 (not against keymon's adapter)."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest

from keymon.simulator.mexc import MexcSimulator, sign
from tests.conftest import FakeClock

DOC_KEY = "mx0aBYs33eIilxBWC5"
DOC_SECRET = "45d0b3c26f2644f19bfb98b07741b2f5"
ACCOUNT = "/api/v3/account"


@pytest.mark.parametrize(
    ("payload", "signature"),
    [
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=11&recvWindow=5000"
            "&timestamp=1644489390087",
            "fd3e4e8543c5188531eb7279d68ae7d26a573d0fc5ab0d18eb692451654d837a",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMITquantity=1&price=11&recvWindow=5000"
            "&timestamp=1644489390087",
            "d1a676610ceb39174c8039b3f548357994b2a34139a8addd33baadba65684592",
        ),
        (
            "recvWindow=5000&timestamp=1644489390087",
            "1103ce19f47c037fc03b8b9d674e10ee76e53272851eb2a3b10321cd353fb9bf",
        ),
    ],
    ids=["M1", "M2", "M3"],
)
def test_sign_reproduces_the_vectors(payload: str, signature: str) -> None:
    assert sign(DOC_SECRET, payload) == signature


def test_the_misprinted_example_does_not_verify() -> None:
    """The doc's "Example 1" signature is a known misprint (§2.6, M1-bad): it must not pass."""
    payload = (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=11&recvWindow=5000"
        "&timestamp=1644489390087"
    )
    assert sign(DOC_SECRET, payload) != (
        "323c96ab85a745712e95e63cad28903dd8292e4a905e99c4ee3932023843a117"
    )


@pytest.fixture
def sim(clock: FakeClock) -> MexcSimulator:
    simulator = MexcSimulator(clock=clock)
    simulator.add_key(DOC_KEY, DOC_SECRET)
    return simulator


def signed_get(
    client: httpx.Client,
    timestamp: int,
    *,
    secret: str = DOC_SECRET,
    key: str = DOC_KEY,
    **extra: str,
) -> httpx.Response:
    query = "&".join([*(f"{k}={v}" for k, v in extra.items()), f"timestamp={timestamp}"])
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return client.get(f"{ACCOUNT}?{query}&signature={signature}", headers={"X-MEXC-APIKEY": key})


def test_served_signed_call_is_accepted_and_refusals_are_documented(
    sim: MexcSimulator, clock: FakeClock
) -> None:
    """Over a real port: accepted; wrong secret 700002; unknown key 700001; stale 700003;
    recvWindow over 60000 refused; a refused IP 700006 naming it."""
    now = int(clock.now * 1000)
    with sim.serve_in_thread() as url, httpx.Client(base_url=url, trust_env=False) as client:
        assert client.get("/api/v3/time").json() == {"serverTime": now}
        ok = signed_get(client, now, recvWindow="5000")
        assert ok.status_code == 200
        assert ok.json()["accountType"] == "SPOT"
        assert signed_get(client, now, secret="wrong").json()["code"] == 700002
        assert signed_get(client, now, key="nobody").json()["code"] == 700001
        stale = signed_get(client, now - 6000)
        assert (stale.status_code, stale.json()["code"]) == (400, 700003)
        assert signed_get(client, now - 6000, recvWindow="10000").status_code == 200
        assert signed_get(client, now + 2000).json()["code"] == 700003  # more than 1 s ahead
        assert signed_get(client, now, recvWindow="60001").json()["code"] == 700003
        sim.update_key(DOC_KEY, ips=["10.0.0.1"])
        refused = signed_get(client, now)
        assert refused.json() == {"code": 700006, "msg": "IP [127.0.0.1] not in the ip white list"}
        assert client.post(ACCOUNT).status_code == 405


def test_rate_limit_answers_429_with_retry_after(sim: MexcSimulator, clock: FakeClock) -> None:
    sim.set_rate_limit(1, 10)
    now = int(clock.now * 1000)
    with sim.serve_in_thread() as url, httpx.Client(base_url=url, trust_env=False) as client:
        assert signed_get(client, now).status_code == 200
        limited = signed_get(client, now)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "10"


def test_unusable_key_states_answer_as_an_unusable_key(
    sim: MexcSimulator, clock: FakeClock
) -> None:
    """MEXC documents no code for frozen or expired keys: they answer 700001."""
    now = int(clock.now * 1000)
    with sim.serve_in_thread() as url, httpx.Client(base_url=url, trust_env=False) as client:
        for state in ("frozen", "expired", "disabled"):
            sim.update_key(DOC_KEY, state=state)
            assert signed_get(client, now).json()["code"] == 700001


def test_admin_api_changes_keys_and_never_returns_secrets(sim: MexcSimulator) -> None:
    with sim.serve_in_thread() as url, httpx.Client(base_url=url, trust_env=False) as client:
        listed = client.get("/_simulator/keys")
        assert DOC_SECRET not in listed.text
        patched = client.patch(f"/_simulator/keys/{DOC_KEY}", json={"state": "frozen"})
        assert patched.json()["state"] == "frozen"
        assert client.patch(f"/_simulator/keys/{DOC_KEY}", json={"state": "x"}).status_code == 400
        assert client.patch(f"/_simulator/keys/{DOC_KEY}", json={"nope": 1}).status_code == 400
        assert client.delete(f"/_simulator/keys/{DOC_KEY}").status_code == 200
        assert client.get("/_simulator/keys").json() == []

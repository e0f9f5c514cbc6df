"""The Kraken simulator on the wire: signature vectors, nonces, IP allowlist, counter, faults."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from keymon.simulator.kraken import KEY_INFO_PATH, KrakenSimulator, sign
from tests.conftest import FakeClock

#: The secret and nonce of Kraken's official example (exchange-apis.md §2.16).
DOC_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
DOC_NONCE = "1616492376594"
KEY = "krakenSimulatorKey"


def test_sign_reproduces_the_official_addorder_vector() -> None:
    """The AddOrder example of Kraken's spot REST auth guide."""
    postdata = f"nonce={DOC_NONCE}&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
    assert sign(DOC_SECRET, "/0/private/AddOrder", DOC_NONCE, postdata) == (
        "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
    )


def test_sign_reproduces_the_derived_getapikeyinfo_vector() -> None:
    """The derived GetApiKeyInfo vector of exchange-apis.md §2.16."""
    assert sign(DOC_SECRET, KEY_INFO_PATH, DOC_NONCE, f"nonce={DOC_NONCE}") == (
        "0hXh9q5/fK8xgzNfiExbUyhEvsv1gAYGgL/5PWy8Xo8kFGhpI/ZwAnHB1eC0SYtlYiywFcypDRuBP/GjHp+ojA=="
    )


def call(
    sim: KrakenSimulator,
    nonce: int | str,
    *,
    key: str = KEY,
    secret: str = DOC_SECRET,
    client_ip: str = "127.0.0.1",
    body: str | None = None,
    content_type: str = "application/x-www-form-urlencoded",
    path: str = KEY_INFO_PATH,
) -> tuple[int, dict[str, Any]]:
    """One signed POST straight to the simulator's handler."""
    postdata = f"nonce={nonce}" if body is None else body
    headers = {
        "API-Key": key,
        "API-Sign": sign(secret, path, str(nonce), postdata),
        "Content-Type": content_type,
    }
    answer = sim.handle("POST", path, "", postdata.encode(), headers, client_ip)
    return answer.status, json.loads(answer.body)


@pytest.fixture
def sim(clock: FakeClock) -> KrakenSimulator:
    """A simulator holding one key, allowlisted to 127.0.0.1."""
    simulator = KrakenSimulator(clock=clock)
    simulator.add_key(KEY, DOC_SECRET)
    return simulator


def test_key_info_answers_the_documented_fields(sim: KrakenSimulator, clock: FakeClock) -> None:
    """A good request gets HTTP 200 and every field §2.16 lists, with an empty error array."""
    status, body = call(sim, 1)
    assert status == 200
    assert body["error"] == []
    result = body["result"]
    assert set(result) == {
        "apiKeyName",
        "apiKey",
        "nonce",
        "nonceWindow",
        "permissions",
        "iban",
        "validUntil",
        "queryFrom",
        "queryTo",
        "createdTime",
        "modifiedTime",
        "ipAllowlist",
        "lastUsed",
    }
    assert result["apiKey"] == KEY
    assert result["validUntil"] == "0"
    assert result["ipAllowlist"] == ["127.0.0.1"]
    assert result["createdTime"] == str(int(clock.now))
    assert result["nonce"] == "1"


def test_the_official_secret_and_nonce_are_accepted(sim: KrakenSimulator) -> None:
    """The derived vector's exact request is accepted: the simulator checks what Kraken does."""
    status, body = call(sim, DOC_NONCE)
    assert (status, body["error"]) == (200, [])


def test_json_bodies_are_signed_too(sim: KrakenSimulator) -> None:
    """A JSON body carries the nonce and is signed as sent."""
    status, body = call(sim, 5, body='{"nonce": 5}', content_type="application/json")
    assert (status, body["error"]) == (200, [])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key": "nobody"}, "EAPI:Invalid key"),
        (
            {"secret": "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlci1zZWNyZXQ="},
            "EAPI:Invalid signature",
        ),
        ({"client_ip": "10.9.9.9"}, "EGeneral:Permission denied"),
        ({"body": "foo=bar"}, "EAPI:Invalid nonce"),
        ({"body": "nonce=%C2%B2"}, "EAPI:Invalid nonce"),
    ],
    ids=["unknown-key", "wrong-secret", "ip-refused", "no-nonce", "not-digits"],
)
def test_refusals_are_http_200_with_an_error(
    sim: KrakenSimulator, kwargs: dict[str, Any], error: str
) -> None:
    """Kraken refuses with HTTP 200 and its error string; no result."""
    status, body = call(sim, 7, **kwargs)
    assert status == 200
    assert body == {"error": [error]}


def test_a_tampered_body_breaks_the_signature(sim: KrakenSimulator) -> None:
    """The signature covers the exact body bytes."""
    headers = {"API-Key": KEY, "API-Sign": sign(DOC_SECRET, KEY_INFO_PATH, "9", "nonce=9")}
    answer = sim.handle("POST", KEY_INFO_PATH, "", b"nonce=9&x=1", headers, "127.0.0.1")
    assert json.loads(answer.body) == {"error": ["EAPI:Invalid signature"]}


def test_nonce_must_increase(sim: KrakenSimulator) -> None:
    """A nonce not above the key's last one is refused; a larger one passes."""
    assert call(sim, 100)[1]["error"] == []
    assert call(sim, 100)[1]["error"] == ["EAPI:Invalid nonce"]
    assert call(sim, 99)[1]["error"] == ["EAPI:Invalid nonce"]
    assert call(sim, 101)[1]["error"] == []
    assert sim.last_nonce(KEY) == 101
    assert sim.errors("EAPI:Invalid nonce") == 2


def test_a_bots_larger_nonce_locks_keymon_out(sim: KrakenSimulator) -> None:
    """Another client of the key that signed a larger nonce makes smaller ones invalid."""
    sim.use_nonce(KEY, 1_000_000)
    assert call(sim, 999_999)[1]["error"] == ["EAPI:Invalid nonce"]


def test_nonce_window_lets_late_nonces_through_once(sim: KrakenSimulator) -> None:
    """Within the key's nonce window a smaller, unused nonce passes, but only once."""
    sim.update_key(KEY, nonce_window=10)
    assert call(sim, 100)[1]["error"] == []
    assert call(sim, 95)[1]["error"] == []
    assert call(sim, 95)[1]["error"] == ["EAPI:Invalid nonce"]
    assert call(sim, 90)[1]["error"] == ["EAPI:Invalid nonce"]  # outside the window


def test_allowlist_takes_cidr_ranges_and_empty_means_any(sim: KrakenSimulator) -> None:
    """A range admits its addresses; an empty allowlist admits every IP."""
    sim.update_key(KEY, ips=["10.0.0.0/8"])
    assert call(sim, 1, client_ip="10.1.2.3")[1]["error"] == []
    sim.update_key(KEY, ips=[])
    assert call(sim, 2, client_ip="192.0.2.1")[1]["error"] == []


def test_expired_key_is_invalid(sim: KrakenSimulator, clock: FakeClock) -> None:
    """A key past its validUntil is refused as an invalid key; before it, it shows the date."""
    sim.update_key(KEY, valid_until=int(clock.now) + 60)
    assert call(sim, 1)[1]["result"]["validUntil"] == str(int(clock.now) + 60)
    clock.advance(61)
    assert call(sim, 2)[1]["error"] == ["EAPI:Invalid key"]


def test_call_counter_refuses_then_decays(sim: KrakenSimulator, clock: FakeClock) -> None:
    """Past the counter's maximum calls get EAPI:Rate limit exceeded until it decays."""
    sim.set_limit(3, decay_per_s=0.5)
    assert [call(sim, n)[1]["error"] for n in (1, 2, 3, 4)] == [
        [],
        [],
        [],
        ["EAPI:Rate limit exceeded"],
    ]
    clock.advance(2)  # one point decayed
    assert call(sim, 5)[1]["error"] == []
    assert call(sim, 6)[1]["error"] == ["EAPI:Rate limit exceeded"]


def test_unknown_paths_and_methods() -> None:
    """Only POST GetApiKeyInfo is served."""
    sim = KrakenSimulator()
    assert sim.handle("POST", "/0/private/Balance", "", b"", {}, "127.0.0.1").status == 404
    assert sim.handle("GET", KEY_INFO_PATH, "", b"", {}, "127.0.0.1").status == 405


def test_faults_fail_and_truncate(sim: KrakenSimulator) -> None:
    """fail_next answers HTML with the status; truncate_next cuts the body."""
    sim.fail_next(1, 502)
    answer = sim.handle("POST", KEY_INFO_PATH, "", b"", {"API-Key": KEY}, "127.0.0.1")
    assert answer.status == 502
    sim.truncate_next(1)
    headers = {"API-Key": KEY, "API-Sign": sign(DOC_SECRET, KEY_INFO_PATH, "3", "nonce=3")}
    answer = sim.handle("POST", KEY_INFO_PATH, "", b"nonce=3", headers, "127.0.0.1")
    with pytest.raises(ValueError, match=r"Expecting|Unterminated"):
        json.loads(answer.body)
    assert sim.request_count(KEY) == 2


def test_secrets_must_be_base64() -> None:
    """A Kraken private key is base64; anything else is refused when the key is added."""
    with pytest.raises(ValueError, match="base64"):
        KrakenSimulator().add_key(KEY, "not base64!")


async def test_served_on_loopback(sim: KrakenSimulator) -> None:
    """The simulator answers over real HTTP on 127.0.0.1, signature checked on the wire."""
    with sim.serve_in_thread() as url:
        postdata = "nonce=42"
        headers = {
            "API-Key": KEY,
            "API-Sign": sign(DOC_SECRET, KEY_INFO_PATH, "42", postdata),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post(KEY_INFO_PATH, content=postdata, headers=headers)
    assert response.status_code == 200
    assert response.json()["result"]["apiKey"] == KEY
    assert "secret" not in repr(sim).lower()

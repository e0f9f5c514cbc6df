"""Tests for the Binance simulator: signing, validation order, rate limits, faults and serving.

Requests are built by the small helpers below (not by keymon's adapter) so that the simulator is
checked against Binance's documented rules and official test vectors only. Time is a fake clock;
nothing sleeps for synchronisation (the CLI tests only wait, bounded, for a subprocess).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from keymon.simulator import (
    BinanceSimulator,
    SimResponse,
    SimulatorServer,
    serve_in_thread,
    signed_payload,
    verify_hmac,
)
from keymon.simulator.__main__ import main as cli_main

# Credentials of binance-spot-api-docs rest-api.md "SIGNED Endpoint Examples" (section 1.3).
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_TIMESTAMP = 1499827319559

B1 = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
B2 = (
    "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT"
    "&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
B3_QUERY = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
B3_BODY = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
B4 = "recvWindow=5000&timestamp=1499827319559"
B5 = "timestamp=1499827319559"
SIG_B1 = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
SIG_B2 = "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
SIG_B3 = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
SIG_B4 = "82f4e72e95e63d666b6da651e82a701722ad8a785a169318d91f36f279c55821"
SIG_B5 = "2222d49722f6af5da13f6da6bfc0d7de19ca2815ebc98bbc49e4942268472f3f"

VECTORS = [
    (B1, SIG_B1),
    (B2, SIG_B2),
    (B3_QUERY + B3_BODY, SIG_B3),
    (B4, SIG_B4),
    (B5, SIG_B5),
]
VECTOR_IDS = ["B1", "B2", "B3", "B4-derived", "B5-derived"]

# (raw query, raw body) of full requests carrying the official signatures.
VECTOR_REQUESTS = [
    (f"{B1}&signature={SIG_B1}", ""),
    ("", f"{B1}&signature={SIG_B1}"),
    (f"{B2}&signature={SIG_B2}", ""),
    (B3_QUERY, f"{B3_BODY}&signature={SIG_B3}"),
    (f"{B4}&signature={SIG_B4}", ""),
    (f"{B5}&signature={SIG_B5}", ""),
]
VECTOR_REQUEST_IDS = ["B1-query", "B1-body", "B2-query", "B3-split", "B4-query", "B5-query"]

RESTRICTIONS = "/sapi/v1/account/apiRestrictions"
TRADING_STATUS = "/sapi/v1/account/apiTradingStatus"
SYSTEM_STATUS = "/sapi/v1/system/status"
PING = "/api/v3/ping"
TIME = "/api/v3/time"
LOCAL = "127.0.0.1"
# A window-aligned epoch second (1_700_000_040 / 60 is whole), so Retry-After values are exact.
START = 1_700_000_040.0
SAPI_WEIGHT = "X-SAPI-USED-IP-WEIGHT-1M"
API_WEIGHT = "X-MBX-USED-WEIGHT-1M"
REPO_ROOT = Path(__file__).resolve().parents[2]

Signer = Callable[[bytes], str]
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class FakeClock:
    """A settable clock in epoch seconds."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def ms(self) -> int:
        return round(self.now * 1000)


def hmac_signer(secret: str = SECRET) -> Signer:
    """Hex HMAC-SHA256, as Binance documents for HMAC keys."""
    return lambda payload: hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def asymmetric_signer(private_key: PrivateKey) -> Signer:
    """Base64 Ed25519 or RSA-PKCS1v15-SHA256 signature, percent-encoded for the URL."""

    def sign(payload: bytes) -> str:
        if isinstance(private_key, ed25519.Ed25519PrivateKey):
            raw = private_key.sign(payload)
        else:
            raw = private_key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return quote(base64.b64encode(raw).decode("ascii"), safe="")

    return sign


@functools.cache
def private_key(kind: str) -> PrivateKey:
    """One generated key pair per kind for the whole module (RSA generation is slow)."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signed_query(params: str, signer: Signer) -> str:
    """``params`` plus its signature, exactly as it will be sent."""
    return f"{params}&signature={signer(params.encode())}"


def restrictions_query(
    clock: FakeClock,
    signer: Signer | None = None,
    *,
    offset_ms: int = 0,
    recv_window: str | None = None,
) -> str:
    """A signed apiRestrictions query stamped ``offset_ms`` from the fake clock's now."""
    params = f"timestamp={clock.ms() + offset_ms}"
    if recv_window is not None:
        params = f"recvWindow={recv_window}&{params}"
    return signed_query(params, signer or hmac_signer())


def call(
    sim: BinanceSimulator,
    path: str,
    query: str = "",
    *,
    api_key: str | None = KEY,
    body: str = "",
    ip: str = LOCAL,
    method: str = "GET",
) -> SimResponse:
    headers = {} if api_key is None else {"X-MBX-APIKEY": api_key}
    return sim.handle(method, path, query, body.encode(), headers, ip)


def payload_of(response: SimResponse) -> Any:
    return json.loads(response.body)


def error_of(response: SimResponse) -> tuple[int, int, str]:
    data = payload_of(response)
    return response.status, data["code"], data["msg"]


def make_sim(clock: FakeClock, **kwargs: Any) -> BinanceSimulator:
    sim = BinanceSimulator(clock=clock, **kwargs)
    sim.add_key(KEY, hmac_secret=SECRET)
    return sim


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> BinanceSimulator:
    return make_sim(clock)


MSG_REJECTED = "Invalid API-key, IP, or permissions for action."
MSG_REJECTED_LOCAL = "Invalid API-key, IP, or permissions for action, request ip: 127.0.0.1"
MSG_BAD_SIGNATURE = "Signature for this request is not valid."
MSG_AHEAD = "Timestamp for this request was 1000ms ahead of the server's time."
MSG_OUTSIDE = "Timestamp for this request is outside of the recvWindow."


# ------------------------------------------------------------------ official HMAC vectors


def flip_first_char(match: re.Match[str]) -> str:
    """Replace the first signature character with a different hex digit."""
    return "signature=" + ("0" if match.group(1) != "0" else "1")


@pytest.mark.parametrize(("payload", "signature"), VECTORS, ids=VECTOR_IDS)
def test_official_vector_verifies(payload: str, signature: str) -> None:
    """verify_hmac accepts each documented signature, in either letter case."""
    assert verify_hmac(SECRET, payload, signature)
    assert verify_hmac(SECRET, payload.encode(), signature.upper())


@pytest.mark.parametrize(("payload", "signature"), VECTORS, ids=VECTOR_IDS)
def test_official_vector_rejects_one_character_change(payload: str, signature: str) -> None:
    """Changing one character of the payload or of the signature fails verification."""
    assert not verify_hmac(SECRET, payload.replace("9559", "9558"), signature)
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert not verify_hmac(SECRET, payload, flipped)


@pytest.mark.parametrize(
    ("raw_query", "body", "expected"),
    [
        (f"{B1}&signature={SIG_B1}", "", B1),
        ("", f"{B1}&signature={SIG_B1}", B1),
        (B3_QUERY, f"{B3_BODY}&signature={SIG_B3}", B3_QUERY + B3_BODY),
        (f"signature={SIG_B4}&{B4}", "", B4),
        (f"recvWindow=5000&signature={SIG_B4}&timestamp=1499827319559", "", B4),
        (f"{B2}&signature={SIG_B2}", "", B2),
        ("a=%7e&b=+&&c=", "", "a=%7e&b=+&&c="),
    ],
    ids=[
        "query-only",
        "body-only",
        "split-no-ampersand",
        "signature-first",
        "signature-middle",
        "percent-encoding-kept",
        "no-signature-bytes-kept",
    ],
)
def test_signed_payload_layout(raw_query: str, body: str, expected: str) -> None:
    """The signed payload is the raw query then the raw body, minus the signature parameter."""
    assert signed_payload(raw_query, body.encode()) == expected.encode()


@pytest.mark.parametrize(("query", "body"), VECTOR_REQUESTS, ids=VECTOR_REQUEST_IDS)
def test_official_vector_request_accepted(query: str, body: str) -> None:
    """A request carrying a documented signature, one second after its timestamp, is served."""
    sim = make_sim(FakeClock(DOC_TIMESTAMP / 1000 + 1))
    response = call(sim, RESTRICTIONS, query, body=body)
    assert response.status == 200, response.body
    assert payload_of(response)["enableReading"] is True


@pytest.mark.parametrize(("query", "body"), VECTOR_REQUESTS, ids=VECTOR_REQUEST_IDS)
@pytest.mark.parametrize("mutate", ["payload", "signature"], ids=["payload", "signature"])
def test_official_vector_request_one_char_change_rejected(
    query: str, body: str, mutate: str
) -> None:
    """One changed character in the signed bytes or in the signature gives -1022."""
    sim = make_sim(FakeClock(DOC_TIMESTAMP / 1000 + 1))
    if mutate == "payload":
        query, body = (part.replace("1499827319559", "1499827319558") for part in (query, body))
    else:
        query, body = (re.sub(r"signature=(\w)", flip_first_char, part) for part in (query, body))
    assert error_of(call(sim, RESTRICTIONS, query, body=body)) == (400, -1022, MSG_BAD_SIGNATURE)


# ------------------------------------------------------------------ Ed25519 and RSA keys


@pytest.mark.parametrize("kind", ["ed25519", "rsa"], ids=["ed25519", "rsa-2048"])
def test_asymmetric_signature_accepted(clock: FakeClock, kind: str) -> None:
    """A request signed with the private half of a registered public key is served."""
    sim = BinanceSimulator(clock=clock)
    sim.add_key("asym1", public_key_pem=public_pem(private_key(kind)))
    query = restrictions_query(clock, asymmetric_signer(private_key(kind)))
    response = call(sim, RESTRICTIONS, query, api_key="asym1")
    assert response.status == 200, response.body
    assert sim.keys()[0]["key_type"] == kind.upper()


@pytest.mark.parametrize("kind", ["ed25519", "rsa"], ids=["ed25519", "rsa-2048"])
@pytest.mark.parametrize(
    "forgery",
    ["other-payload", "other-key", "hmac", "swapped-case", "not-base64"],
    ids=["other-payload", "other-key", "hmac-for-asymmetric-key", "swapped-case", "not-base64"],
)
def test_asymmetric_wrong_signature_rejected(clock: FakeClock, kind: str, forgery: str) -> None:
    """Wrong, foreign, HMAC, case-changed or undecodable signatures all give -1022."""
    sim = BinanceSimulator(clock=clock)
    sim.add_key("asym1", public_key_pem=public_pem(private_key(kind)))
    good = asymmetric_signer(private_key(kind))
    params = f"timestamp={clock.ms()}"
    signatures = {
        "other-payload": good(b"timestamp=1"),
        "other-key": asymmetric_signer(ed25519.Ed25519PrivateKey.generate())(params.encode()),
        "hmac": hmac_signer()(params.encode()),
        "swapped-case": good(params.encode()).swapcase(),
        "not-base64": "%21%21%21",
    }
    query = f"{params}&signature={signatures[forgery]}"
    response = call(sim, RESTRICTIONS, query, api_key="asym1")
    assert error_of(response) == (400, -1022, MSG_BAD_SIGNATURE)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hmac_secret": "s", "public_key_pem": "pem"}, "exactly one"),
        ({}, "exactly one"),
        ({"hmac_secret": ""}, "non-empty"),
        ({"public_key_pem": "not a pem"}, "PEM-encoded public key"),
        ({"hmac_secret": "s", "ip_whitelist": ["300.1.1.1"]}, "invalid ip_whitelist"),
        ({"hmac_secret": "s", "restrictions": {"x": object()}}, "JSON-serialisable"),
    ],
    ids=["both", "neither", "empty-secret", "bad-pem", "bad-ip", "non-json-restriction"],
)
def test_add_key_rejects_bad_definitions(kwargs: dict[str, Any], match: str) -> None:
    """add_key refuses an unusable key definition with a clear ValueError."""
    sim = BinanceSimulator()
    with pytest.raises(ValueError, match=match):
        sim.add_key("abc123", **kwargs)


def test_add_key_rejects_unsupported_key_type_and_bad_names(sim: BinanceSimulator) -> None:
    """EC public keys, malformed api keys and duplicates are refused."""
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="unsupported public key type"):
        sim.add_key("eckey", public_key_pem=ec_pem)
    with pytest.raises(ValueError, match="letters and digits"):
        sim.add_key("bad-key", hmac_secret="s")
    with pytest.raises(ValueError, match="already exists"):
        sim.add_key(KEY, hmac_secret="s")


# ------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    ("offset_ms", "recv_window", "expected"),
    [
        (0, None, None),
        (999, None, None),
        (1000, None, (400, -1021, MSG_AHEAD)),
        (1001, None, (400, -1021, MSG_AHEAD)),
        (-5000, None, None),
        (-5001, None, (400, -1021, MSG_OUTSIDE)),
        (-9000, "10000", None),
        (-10001, "10000", (400, -1021, MSG_OUTSIDE)),
        (-200, "100", (400, -1021, MSG_OUTSIDE)),
        (-5000, "4999.5", (400, -1021, MSG_OUTSIDE)),
        (-59000, "60000", None),
        (0, "60001", (400, -1131, "recvWindow must be less than 60000")),
    ],
    ids=[
        "now",
        "999ms-ahead",
        "1000ms-ahead",
        "1001ms-ahead",
        "5000ms-old",
        "5001ms-old",
        "custom-window-ok",
        "custom-window-exceeded",
        "small-window",
        "decimal-window",
        "max-window",
        "window-60001",
    ],
)
def test_timestamp_window(
    sim: BinanceSimulator,
    clock: FakeClock,
    offset_ms: int,
    recv_window: str | None,
    expected: tuple[int, int, str] | None,
) -> None:
    """timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow, else -1021."""
    query = restrictions_query(clock, offset_ms=offset_ms, recv_window=recv_window)
    response = call(sim, RESTRICTIONS, query)
    if expected is None:
        assert response.status == 200, response.body
    else:
        assert error_of(response) == expected


def test_microsecond_timestamp_accepted(sim: BinanceSimulator, clock: FakeClock) -> None:
    """A microsecond timestamp is judged like the same instant in milliseconds."""
    query = signed_query(f"timestamp={clock.ms() * 1000 - 4_000_000}", hmac_signer())
    assert call(sim, RESTRICTIONS, query).status == 200
    old = signed_query(f"timestamp={clock.ms() * 1000 - 6_000_000}", hmac_signer())
    assert error_of(call(sim, RESTRICTIONS, old)) == (400, -1021, MSG_OUTSIDE)


def test_malformed_recv_window_rejected(sim: BinanceSimulator, clock: FakeClock) -> None:
    """A recvWindow that is not a number is a parameter error (-1100), not a timestamp error."""
    response = call(sim, RESTRICTIONS, restrictions_query(clock, recv_window="5s"))
    status, code, msg = error_of(response)
    assert (status, code) == (400, -1100)
    assert "recvWindow" in msg


@pytest.mark.parametrize(
    ("skew_ms", "offset_ms", "expected"),
    [
        (6000, 0, (400, -1021, MSG_OUTSIDE)),
        (-2000, 0, (400, -1021, MSG_AHEAD)),
        (6000, 6000, None),
        (-2000, -2000, None),
    ],
    ids=["server-ahead", "server-behind", "client-synced-ahead", "client-synced-behind"],
)
def test_clock_skew_shifts_judgement(
    sim: BinanceSimulator,
    clock: FakeClock,
    skew_ms: int,
    offset_ms: int,
    expected: tuple[int, int, str] | None,
) -> None:
    """Server time is clock plus skew: /api/v3/time shows it and timestamps are judged by it."""
    sim.clock_skew_ms = skew_ms
    assert payload_of(call(sim, TIME))["serverTime"] == clock.ms() + skew_ms
    response = call(sim, RESTRICTIONS, restrictions_query(clock, offset_ms=offset_ms))
    if expected is None:
        assert response.status == 200, response.body
    else:
        assert error_of(response) == expected


# ------------------------------------------------------------------ keys, IPs, parameters


@pytest.mark.parametrize(
    "api_key",
    [None, "", "abc def", "abc-def", "caf\u00e9123"],
    ids=["missing", "empty", "space", "dash", "non-ascii"],
)
def test_bad_api_key_header_is_2014(
    sim: BinanceSimulator, clock: FakeClock, api_key: str | None
) -> None:
    """A missing or malformed X-MBX-APIKEY header gives 401 -2014."""
    response = call(sim, RESTRICTIONS, restrictions_query(clock), api_key=api_key)
    assert error_of(response) == (401, -2014, "API-key format invalid.")


def test_unknown_and_deleted_keys_are_2015_without_ip(
    sim: BinanceSimulator, clock: FakeClock
) -> None:
    """Unknown and deleted keys get 401 -2015 with the plain message (no request-ip suffix)."""
    assert error_of(call(sim, RESTRICTIONS, restrictions_query(clock), api_key="nokey")) == (
        401,
        -2015,
        MSG_REJECTED,
    )
    assert call(sim, RESTRICTIONS, restrictions_query(clock)).status == 200
    sim.delete_key(KEY)
    assert error_of(call(sim, RESTRICTIONS, restrictions_query(clock))) == (
        401,
        -2015,
        MSG_REJECTED,
    )
    assert sim.keys() == []
    assert sim.request_count(KEY) == 2
    with pytest.raises(KeyError, match="unknown api_key"):
        sim.delete_key(KEY)


def test_ip_outside_whitelist_is_2015_with_request_ip(
    sim: BinanceSimulator, clock: FakeClock
) -> None:
    """A correctly signed request from a non-whitelisted IP names that IP in the -2015 text."""
    sim.set_ip_whitelist(KEY, ["203.0.113.7", "10.0.0.0/8"])
    assert error_of(call(sim, RESTRICTIONS, restrictions_query(clock))) == (
        401,
        -2015,
        MSG_REJECTED_LOCAL,
    )
    response = call(sim, RESTRICTIONS, restrictions_query(clock), ip="198.51.100.4")
    assert payload_of(response)["msg"].endswith(", request ip: 198.51.100.4")


@pytest.mark.parametrize(
    ("whitelist", "client_ip", "restrictions"),
    [
        (["127.0.0.1"], LOCAL, {}),
        (["10.0.0.0/8", "127.0.0.0/30"], LOCAL, {}),
        (None, LOCAL, {}),
        (None, "::1", {}),
        (["127.0.0.1"], "::ffff:127.0.0.1", {}),
        (["2001:db8::/32"], "2001:db8::5", {}),
        (["203.0.113.7"], LOCAL, {"ipRestrict": False}),
    ],
    ids=[
        "exact-ip",
        "cidr",
        "default-loopback",
        "default-loopback-v6",
        "ipv4-mapped",
        "v6-cidr",
        "unrestricted-key",
    ],
)
def test_whitelisted_ip_accepted(
    clock: FakeClock,
    whitelist: list[str] | None,
    client_ip: str,
    restrictions: dict[str, object],
) -> None:
    """An IP in the whitelist (address or CIDR), or any IP for an unrestricted key, is served."""
    sim = BinanceSimulator(clock=clock)
    sim.add_key(KEY, hmac_secret=SECRET, ip_whitelist=whitelist, restrictions=restrictions)
    response = call(sim, RESTRICTIONS, restrictions_query(clock), ip=client_ip)
    assert response.status == 200, response.body


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("recvWindow=5000", "timestamp"),
        ("timestamp=", "timestamp"),
        ("timestamp=12ab", "timestamp"),
        ("timestamp=-5", "timestamp"),
        ("timestamp={now}", "signature"),
        ("timestamp={now}&signature=", "signature"),
    ],
    ids=[
        "no-timestamp",
        "empty-timestamp",
        "malformed-timestamp",
        "negative-timestamp",
        "no-signature",
        "empty-signature",
    ],
)
def test_missing_mandatory_parameter_is_1102(
    sim: BinanceSimulator, clock: FakeClock, query: str, name: str
) -> None:
    """A missing or malformed timestamp or signature gives 400 -1102 naming the parameter."""
    raw = query.format(now=clock.ms())
    if name == "timestamp":
        raw = signed_query(raw, hmac_signer())
    expected = f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    assert error_of(call(sim, RESTRICTIONS, raw)) == (400, -1102, expected)


@pytest.mark.parametrize(
    ("api_key", "offset_ms", "signer", "whitelist", "expected_code"),
    [
        ("nokey", -99999, hmac_signer("wrong"), ["10.0.0.1"], -2015),
        (KEY, -99999, hmac_signer("wrong"), ["10.0.0.1"], -1021),
        (KEY, 0, hmac_signer("wrong"), ["10.0.0.1"], -1022),
        (KEY, 0, hmac_signer(), ["10.0.0.1"], -2015),
    ],
    ids=["key-before-timestamp", "timestamp-before-signature", "signature-before-ip", "ip-last"],
)
def test_validation_order(
    sim: BinanceSimulator,
    clock: FakeClock,
    api_key: str,
    offset_ms: int,
    signer: Signer,
    whitelist: list[str],
    expected_code: int,
) -> None:
    """Checks run in Binance's order: key, parameters, timestamp, signature, then IP."""
    sim.set_ip_whitelist(KEY, whitelist)
    query = restrictions_query(clock, signer, offset_ms=offset_ms)
    assert error_of(call(sim, RESTRICTIONS, query, api_key=api_key))[1] == expected_code


def test_query_string_value_wins_over_body(sim: BinanceSimulator, clock: FakeClock) -> None:
    """A parameter present in query and body takes the query-string value (rest-api.md)."""
    query = f"timestamp={clock.ms()}"
    body = f"timestamp={clock.ms() - 99999}"
    signature = hmac_signer()((query + body).encode())
    response = call(sim, RESTRICTIONS, f"{query}&signature={signature}", body=body)
    assert response.status == 200, response.body


# ------------------------------------------------------------------ endpoints and restrictions


@pytest.mark.parametrize(
    ("path", "expected", "weight_header"),
    [
        (PING, {}, API_WEIGHT),
        (TIME, {"serverTime": round(START * 1000)}, API_WEIGHT),
        (SYSTEM_STATUS, {"status": 0, "msg": "normal"}, SAPI_WEIGHT),
    ],
    ids=["ping", "time", "system-status"],
)
def test_public_endpoints(
    sim: BinanceSimulator, path: str, expected: dict[str, object], weight_header: str
) -> None:
    """NONE endpoints answer without a key and carry their counter's weight header."""
    response = call(sim, path, api_key=None)
    assert response.status == 200
    assert payload_of(response) == expected
    assert response.headers[weight_header] == "1"
    assert response.headers["Content-Type"].startswith("application/json")


def test_time_in_microseconds(sim: BinanceSimulator, clock: FakeClock) -> None:
    """X-MBX-TIME-UNIT: MICROSECOND makes /api/v3/time answer in microseconds."""
    response = sim.handle("GET", TIME, "", b"", {"x-mbx-time-unit": "MICROSECOND"}, LOCAL)
    assert payload_of(response) == {"serverTime": clock.ms() * 1000}


def test_api_trading_status(sim: BinanceSimulator, clock: FakeClock) -> None:
    """apiTradingStatus reports an unlocked key in the documented shape."""
    response = call(sim, TRADING_STATUS, restrictions_query(clock))
    assert response.status == 200
    data = payload_of(response)["data"]
    assert data["isLocked"] is False
    assert data["plannedRecoverTime"] == 0
    assert data["triggerCondition"] == {"GCR": 150, "IFER": 150, "UFR": 300}
    assert isinstance(data["updateTime"], int)
    assert "indicators" not in data  # the documentation page's example has none


ACCOUNT_STATUS = "/sapi/v1/account/status"


def test_trading_status_and_account_status_are_signed_weight_1(
    sim: BinanceSimulator, clock: FakeClock
) -> None:
    """Both USER_DATA endpoints refuse an unsigned call, and cost IP weight 1 each."""
    assert error_of(call(sim, ACCOUNT_STATUS, "timestamp=1"))[:2] == (400, -1102)
    first = call(sim, TRADING_STATUS, restrictions_query(clock))
    second = call(sim, ACCOUNT_STATUS, restrictions_query(clock))
    assert payload_of(second) == {"data": "Normal"}
    used = int(second.headers[SAPI_WEIGHT]) - int(first.headers[SAPI_WEIGHT])
    assert used == 1


def test_trading_state_is_set_per_key_and_a_lock_lifts_at_its_planned_time(
    sim: BinanceSimulator, clock: FakeClock
) -> None:
    """set_trading_status/set_account_status change one key's answers (the OpenAPI shape with
    indicators); the lock lifts itself once plannedRecoverTime has passed."""
    sim.add_key("k2", hmac_secret="s2")
    indicators = {"BTCUSDT": [{"i": "UFR", "c": 20, "v": 0.05, "t": 0.99}]}
    sim.set_trading_status(
        KEY, isLocked=True, plannedRecoverTime=clock.ms() + 60_000, indicators=indicators
    )
    sim.set_account_status(KEY, "Restricted")
    data = payload_of(call(sim, TRADING_STATUS, restrictions_query(clock)))["data"]
    assert list(data) == [
        "isLocked",
        "plannedRecoverTime",
        "triggerCondition",
        "indicators",
        "updateTime",
    ]
    assert (data["isLocked"], data["indicators"]) == (True, indicators)
    assert payload_of(call(sim, ACCOUNT_STATUS, restrictions_query(clock))) == {
        "data": "Restricted"
    }
    other = sim.keys()[1]
    assert other["trading_status"] == {
        "isLocked": False,
        "plannedRecoverTime": 0,
        "triggerCondition": {"GCR": 150, "IFER": 150, "UFR": 300},
    }
    assert other["account_status"] == "Normal"
    clock.advance(61)
    data = payload_of(call(sim, TRADING_STATUS, restrictions_query(clock)))["data"]
    assert (data["isLocked"], data["plannedRecoverTime"]) == (False, 0)
    with pytest.raises(ValueError, match="unknown trading_status fields: locked"):
        sim.set_trading_status(KEY, locked=True)
    with pytest.raises(ValueError, match="non-empty"):
        sim.set_account_status(KEY, "")


def test_admin_api_sets_trading_state(sim: BinanceSimulator, clock: FakeClock) -> None:
    """PATCH /_simulator/keys/{key} takes trading_status (merged) and account_status; POST
    takes them for a new key; a bad value changes nothing."""
    status, view = admin(
        sim,
        "PATCH",
        f"/_simulator/keys/{KEY}",
        {"trading_status": {"isLocked": True}, "account_status": "Restricted"},
    )
    assert status == 200
    assert view["trading_status"]["isLocked"] is True
    assert view["trading_status"]["triggerCondition"] == {"GCR": 150, "IFER": 150, "UFR": 300}
    assert view["account_status"] == "Restricted"
    bad = admin(sim, "PATCH", f"/_simulator/keys/{KEY}", {"trading_status": {"nope": 1}})
    assert bad[0] == 400
    assert admin(sim, "GET", f"/_simulator/keys/{KEY}")[1]["trading_status"]["isLocked"] is True
    status, view = admin(
        sim,
        "POST",
        "/_simulator/keys",
        {"api_key": "k3", "hmac_secret": "s3", "account_status": "Frozen"},
    )
    assert (status, view["account_status"]) == (201, "Frozen")
    assert admin(sim, "POST", "/_simulator/keys", {"api_key": "k3", "hmac_secret": "s"})[0] == 409


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v3/nothing", 404),
        ("GET", "/sapi/v1/account/apiRestriction", 404),
        ("GET", "/", 404),
        ("GET", "/_simulator/keys", 404),
        ("POST", RESTRICTIONS, 405),
        ("DELETE", PING, 405),
    ],
    ids=["unknown-api", "typo-sapi", "root", "admin-not-on-exchange-handler", "post", "delete"],
)
def test_unknown_path_and_wrong_method(
    sim: BinanceSimulator, method: str, path: str, status: int
) -> None:
    """Unknown paths are 404 and known paths with the wrong method 405, both with -1000."""
    response = call(sim, path, method=method)
    assert response.status == status
    assert payload_of(response)["code"] == -1000
    if status == 405:
        assert response.headers["Allow"] == "GET"


def test_default_restrictions_are_the_guide_example(
    sim: BinanceSimulator, clock: FakeClock
) -> None:
    """Without overrides a key reports the guide-compliant constructed example of section 1.4."""
    data = payload_of(call(sim, RESTRICTIONS, restrictions_query(clock)))
    assert data == {
        "ipRestrict": True,
        "createTime": clock.ms() - 30 * 86_400_000,
        "enableReading": True,
        "enableWithdrawals": False,
        "enableInternalTransfer": False,
        "enableMargin": False,
        "enableFutures": False,
        "permitsUniversalTransfer": False,
        "enableVanillaOptions": False,
        "enableFixApiTrade": False,
        "enableFixReadOnly": False,
        "enableSpotAndMarginTrading": True,
        "enablePortfolioMarginTrading": False,
    }
    assert "tradingAuthorityExpirationTime" not in data


def test_restriction_overrides_and_unknown_flags_are_echoed(clock: FakeClock) -> None:
    """Overrides replace defaults, unknown flags are echoed and None removes a field."""
    sim = BinanceSimulator(clock=clock)
    sim.add_key(
        KEY,
        hmac_secret=SECRET,
        restrictions={
            "ipRestrict": False,
            "enableWithdrawals": True,
            "tradingAuthorityExpirationTime": 1628985600000 * 2,
            "enableSomethingNew": True,
            "enableFixReadOnly": None,
        },
    )
    data = payload_of(call(sim, RESTRICTIONS, restrictions_query(clock)))
    assert data["ipRestrict"] is False
    assert data["enableWithdrawals"] is True
    assert data["tradingAuthorityExpirationTime"] == 1628985600000 * 2
    assert data["enableSomethingNew"] is True
    assert "enableFixReadOnly" not in data
    sim.update_key(KEY, enableWithdrawals=False, tradingAuthorityExpirationTime=None)
    data = payload_of(call(sim, RESTRICTIONS, restrictions_query(clock)))
    assert data["enableWithdrawals"] is False
    assert "tradingAuthorityExpirationTime" not in data
    with pytest.raises(KeyError, match="unknown api_key"):
        sim.update_key("nokey", enableReading=True)


def test_trading_permission_switches_off_at_expiry(sim: BinanceSimulator, clock: FakeClock) -> None:
    """At tradingAuthorityExpirationTime the spot trading permission reads false (section 1.5)."""
    sim.update_key(KEY, ipRestrict=False, tradingAuthorityExpirationTime=clock.ms() + 1000)
    assert payload_of(call(sim, RESTRICTIONS, restrictions_query(clock)))[
        "enableSpotAndMarginTrading"
    ]
    clock.advance(1)
    data = payload_of(call(sim, RESTRICTIONS, restrictions_query(clock)))
    assert data["enableSpotAndMarginTrading"] is False
    assert data["tradingAuthorityExpirationTime"] == clock.ms()


# ------------------------------------------------------------------ rate limits


def test_weight_headers_count_per_ip_and_counter(sim: BinanceSimulator, clock: FakeClock) -> None:
    """Each request, rejected or not, adds its weight to its IP's /api or /sapi counter."""
    seen = [call(sim, SYSTEM_STATUS).headers[SAPI_WEIGHT] for _ in range(2)]
    rejected = call(sim, RESTRICTIONS, restrictions_query(clock), api_key="nokey")
    assert rejected.status == 401
    seen.append(rejected.headers[SAPI_WEIGHT])
    seen.append(call(sim, RESTRICTIONS, restrictions_query(clock)).headers[SAPI_WEIGHT])
    assert seen == ["1", "2", "3", "4"]
    ping = call(sim, PING)
    assert ping.headers[API_WEIGHT] == "1"
    assert SAPI_WEIGHT not in ping.headers
    assert call(sim, SYSTEM_STATUS, ip="10.1.1.1").headers[SAPI_WEIGHT] == "1"


@pytest.mark.parametrize(
    ("path", "header", "limit_kwarg"),
    [
        (SYSTEM_STATUS, SAPI_WEIGHT, "sapi_ip_weight_limit"),
        (PING, API_WEIGHT, "api_ip_weight_limit"),
    ],
    ids=["sapi", "api"],
)
def test_429_past_limit_with_retry_after(
    clock: FakeClock, path: str, header: str, limit_kwarg: str
) -> None:
    """Exceeding the per-minute limit gives 429 -1003 with Retry-After to the window's end."""
    sim = make_sim(clock, **{limit_kwarg: 3})
    clock.advance(15)
    assert [call(sim, path).status for _ in range(3)] == [200, 200, 200]
    response = call(sim, path)
    status, code, msg = error_of(response)
    assert (status, code) == (429, -1003)
    assert msg.startswith("Too much request weight used; current limit is 3 request weight per ")
    assert response.headers["Retry-After"] == "45"
    assert response.headers[header] == "3"
    assert sim.count_429 == 1
    clock.advance(44.5)
    assert call(sim, path).headers["Retry-After"] == "1"


def test_429_applies_to_both_counters_and_only_that_ip(clock: FakeClock) -> None:
    """An IP told 429 on /sapi is told 429 on /api too; other IPs are unaffected."""
    sim = make_sim(clock, sapi_ip_weight_limit=1)
    assert call(sim, SYSTEM_STATUS).status == 200
    assert call(sim, SYSTEM_STATUS).status == 429
    assert call(sim, PING).status == 429
    assert call(sim, PING, ip="10.0.0.2").status == 200


def test_window_reset_restores_service(clock: FakeClock) -> None:
    """A new one-minute window starts with zero weight and no 429 state."""
    sim = make_sim(clock, sapi_ip_weight_limit=2)
    assert [call(sim, SYSTEM_STATUS).status for _ in range(3)] == [200, 200, 429]
    clock.advance(59.999)
    assert call(sim, SYSTEM_STATUS).status == 429
    clock.advance(0.001)
    response = call(sim, SYSTEM_STATUS)
    assert response.status == 200
    assert response.headers[SAPI_WEIGHT] == "1"


def test_continuing_after_429_earns_a_418_ban(clock: FakeClock) -> None:
    """More than ban_after_rejected requests during a 429 ban the IP with 418 and Retry-After."""
    sim = make_sim(clock, sapi_ip_weight_limit=2, ban_after_rejected=2, ban_seconds=120)
    clock.advance(10)
    statuses = [call(sim, SYSTEM_STATUS).status for _ in range(6)]
    assert statuses == [200, 200, 429, 429, 429, 418]
    banned = call(sim, PING)
    status, code, msg = error_of(banned)
    assert (status, code) == (418, -1003)
    until = clock.ms() + 120_000
    assert msg == (
        f"Way too much request weight used; IP banned until {until}. "
        "Please use WebSocket Streams for live updates to avoid bans."
    )
    assert banned.headers["Retry-After"] == "120"
    assert banned.headers[API_WEIGHT] == "0"
    assert (sim.count_429, sim.count_418) == (3, 2)
    assert call(sim, PING, ip="10.0.0.2").status == 200


def test_ban_lasts_until_retry_after_passes(clock: FakeClock) -> None:
    """A banned IP gets 418 (even after a window change) until Retry-After elapses."""
    sim = make_sim(clock, sapi_ip_weight_limit=1, ban_after_rejected=0, ban_seconds=120)
    assert [call(sim, SYSTEM_STATUS).status for _ in range(3)] == [200, 429, 418]
    clock.advance(119.5)
    still = call(sim, RESTRICTIONS, restrictions_query(clock))
    assert still.status == 418
    assert still.headers["Retry-After"] == "1"
    clock.advance(0.5)
    assert call(sim, RESTRICTIONS, restrictions_query(clock)).status == 200


@pytest.mark.parametrize(
    ("ban_seconds", "expected"),
    [(120, ["120", "240", "480"]), (100_000, ["100000", "200000", "259200"])],
    ids=["doubling", "capped-at-3-days"],
)
def test_repeat_offences_double_the_ban(
    clock: FakeClock, ban_seconds: int, expected: list[str]
) -> None:
    """Each repeat offence doubles the ban, up to three days."""
    sim = make_sim(clock, sapi_ip_weight_limit=1, ban_after_rejected=0, ban_seconds=ban_seconds)
    seen = []
    for _ in expected:
        assert [call(sim, SYSTEM_STATUS).status for _ in range(2)] == [200, 429]
        ban = call(sim, SYSTEM_STATUS)
        seen.append(ban.headers["Retry-After"])
        clock.advance(int(ban.headers["Retry-After"]) + 60)
    assert seen == expected
    sim.reset_rate_limits()
    assert call(sim, SYSTEM_STATUS).headers[SAPI_WEIGHT] == "1"


# ------------------------------------------------------------------ faults, log, secrets


@pytest.mark.parametrize(
    ("status", "is_json"),
    [(503, True), (500, True), (403, False)],
    ids=["503", "500", "403-waf"],
)
def test_fail_next_then_recovers(sim: BinanceSimulator, status: int, is_json: bool) -> None:
    """fail_next(n) answers n requests with the status (5xx: -1001 JSON), then recovers."""
    sim.fail_next(2, status)
    failed = [call(sim, PING) for _ in range(2)]
    assert [response.status for response in failed] == [status, status]
    if is_json:
        assert payload_of(failed[0]) == {
            "code": -1001,
            "msg": "Internal error; unable to process your request. Please try again.",
        }
    else:
        assert failed[0].headers["Content-Type"] == "text/html"
        assert failed[0].body.startswith(b"<html>")
    assert call(sim, PING).status == 200
    assert [entry.status for entry in sim.request_log] == [status, status, 200]


@pytest.mark.parametrize("path", [PING, TIME, RESTRICTIONS], ids=["ping", "time", "restrictions"])
def test_truncate_next_breaks_the_json(sim: BinanceSimulator, clock: FakeClock, path: str) -> None:
    """truncate_next(1) cuts one 200 body mid-JSON; the next answer is whole again."""
    sim.truncate_next(1)
    response = call(sim, path, restrictions_query(clock))
    assert response.status == 200
    assert response.body
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.body)
    assert payload_of(call(sim, path, restrictions_query(clock))) is not None


def test_latency_is_reported_as_delay(sim: BinanceSimulator, clock: FakeClock) -> None:
    """Latency is returned as the response delay for every exchange answer, errors included."""
    sim.latency = 0.25
    sim.fail_next(1)
    delays = [
        call(sim, PING).delay,
        call(sim, PING).delay,
        call(sim, RESTRICTIONS, restrictions_query(clock), api_key="nokey").delay,
    ]
    assert delays == [0.25, 0.25, 0.25]
    assert sim.handle_admin("GET", "/_simulator/keys", "", b"", {}, LOCAL).delay == 0.0


def set_latency(sim: BinanceSimulator, seconds: float) -> None:
    sim.latency = seconds


@pytest.mark.parametrize(
    "action",
    [
        lambda sim: set_latency(sim, -1),
        lambda sim: set_latency(sim, float("nan")),
        lambda sim: sim.fail_next(-1),
        lambda sim: sim.fail_next(1, 99),
        lambda sim: sim.truncate_next(-1),
    ],
    ids=["negative-latency", "nan-latency", "negative-fail", "bad-status", "negative-truncate"],
)
def test_fault_settings_are_validated(
    sim: BinanceSimulator, action: Callable[[BinanceSimulator], None]
) -> None:
    """Nonsensical fault settings raise ValueError instead of silently misbehaving."""
    with pytest.raises(ValueError, match=r">= 0|100-599"):
        action(sim)


def test_request_log_and_counts(sim: BinanceSimulator, clock: FakeClock) -> None:
    """The log records method, path, key and status of every exchange request, not admin ones."""
    assert sim.request_log == []
    assert sim.request_count(KEY) == 0
    call(sim, RESTRICTIONS, restrictions_query(clock))
    call(sim, PING, api_key=None)
    call(sim, RESTRICTIONS, restrictions_query(clock), api_key="other")
    sim.handle_admin("GET", "/_simulator/stats", "", b"", {}, LOCAL)
    assert sim.request_log == [
        ("GET", RESTRICTIONS, KEY, 200),
        ("GET", PING, None, 200),
        ("GET", RESTRICTIONS, "other", 401),
    ]
    assert (sim.request_count(KEY), sim.request_count("other")) == (1, 1)


def test_secrets_never_exposed(sim: BinanceSimulator, clock: FakeClock) -> None:
    """No repr, listing, admin answer or exchange answer contains the HMAC secret."""
    call(sim, RESTRICTIONS, restrictions_query(clock))
    texts = [repr(sim), repr(sim.keys()), repr(sim.request_log)]
    for path in ("/_simulator/keys", f"/_simulator/keys/{KEY}", "/_simulator/stats"):
        texts.append(sim.handle_admin("GET", path, "", b"", {}, LOCAL).body.decode())
    patched = sim.handle_admin("PATCH", f"/_simulator/keys/{KEY}", "", b"{}", {}, LOCAL)
    texts.append(patched.body.decode())
    texts.append(call(sim, RESTRICTIONS, restrictions_query(clock)).body.decode())
    assert all(SECRET not in text for text in texts)


# ------------------------------------------------------------------ admin API (direct)


def admin(sim: BinanceSimulator, method: str, path: str, body: object = None) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    response = sim.handle_admin(method, path, "", raw, {}, LOCAL)
    return response.status, payload_of(response)


def test_admin_key_lifecycle(sim: BinanceSimulator, clock: FakeClock) -> None:
    """The admin API adds, lists, patches and deletes keys, and PATCH can set the whitelist."""
    status, created = admin(sim, "POST", "/_simulator/keys", {"api_key": "k2", "hmac_secret": "s2"})
    assert status == 201
    assert created["key_type"] == "HMAC"
    status, listed = admin(sim, "GET", "/_simulator/keys")
    assert [entry["api_key"] for entry in listed] == [KEY, "k2"]
    status, patched = admin(
        sim,
        "PATCH",
        f"/_simulator/keys/{KEY}",
        {"enableWithdrawals": True, "ip_whitelist": ["10.0.0.1"]},
    )
    assert status == 200
    assert patched["restrictions"]["enableWithdrawals"] is True
    assert patched["ip_whitelist"] == ["10.0.0.1"]
    assert error_of(call(sim, RESTRICTIONS, restrictions_query(clock)))[2] == MSG_REJECTED_LOCAL
    admin(sim, "PATCH", f"/_simulator/keys/{KEY}", {"ip_whitelist": None})
    data = payload_of(call(sim, RESTRICTIONS, restrictions_query(clock)))
    assert data["enableWithdrawals"] is True
    assert admin(sim, "DELETE", "/_simulator/keys/k2") == (200, {"deleted": "k2"})
    remaining = sim.keys()
    assert [entry["api_key"] for entry in remaining] == [KEY]


def test_admin_faults_and_stats(sim: BinanceSimulator, clock: FakeClock) -> None:
    """POST /_simulator/faults sets every fault knob; GET /_simulator/stats reports counters."""
    settings = {
        "latency": 0.02,
        "fail_next": 1,
        "fail_status": 502,
        "truncate_next": 1,
        "clock_skew_ms": -3000,
        "fail_path": None,
    }
    assert admin(sim, "POST", "/_simulator/faults", settings) == (200, settings)
    assert call(sim, PING).status == 502
    truncated = call(sim, PING)
    assert (truncated.status, truncated.body, truncated.delay) == (200, b"{", 0.02)
    assert payload_of(call(sim, TIME))["serverTime"] == clock.ms() - 3000
    status, stats = admin(sim, "GET", "/_simulator/stats")
    assert status == 200
    assert stats["count_429"] == 0
    assert [entry["status"] for entry in stats["requests"]] == [502, 200, 200]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/_simulator/nothing", None, 404),
        ("PUT", "/_simulator/keys", None, 405),
        ("DELETE", "/_simulator/faults", None, 405),
        ("PATCH", "/_simulator/keys/nokey", {}, 404),
        ("PATCH", f"/_simulator/keys/{KEY}", [1, 2], 400),
        ("PATCH", f"/_simulator/keys/{KEY}", {"ip_whitelist": ["nonsense"]}, 400),
        ("PATCH", f"/_simulator/keys/{KEY}", {"ip_whitelist": "10.0.0.1"}, 400),
        ("POST", "/_simulator/faults", {"fail_next": -1}, 400),
        ("POST", "/_simulator/faults", {"latency": "slow"}, 400),
        ("POST", "/_simulator/faults", {"chaos": 1}, 400),
        ("POST", "/_simulator/keys", {"api_key": KEY, "hmac_secret": "x"}, 409),
        ("POST", "/_simulator/keys", {"api_key": "k3"}, 400),
        ("POST", "/_simulator/keys", {"api_key": "k3", "secret": "x"}, 400),
    ],
    ids=[
        "unknown-path",
        "keys-put",
        "faults-delete",
        "patch-unknown-key",
        "patch-not-object",
        "patch-bad-ip",
        "patch-whitelist-not-list",
        "negative-fail",
        "latency-not-number",
        "unknown-fault",
        "duplicate-key",
        "key-without-secret",
        "key-unknown-field",
    ],
)
def test_admin_errors(
    sim: BinanceSimulator, method: str, path: str, body: object, status: int
) -> None:
    """Bad admin requests get a 4xx JSON error and change nothing."""
    before = sim.keys()
    got, data = admin(sim, method, path, body)
    assert got == status
    assert isinstance(data["error"], str)
    assert sim.keys() == before


def test_admin_rejects_invalid_json(sim: BinanceSimulator) -> None:
    """A body that is not JSON at all is a 400."""
    response = sim.handle_admin("POST", "/_simulator/faults", "", b"{nope", {}, LOCAL)
    assert response.status == 400


# ------------------------------------------------------------------ served over httpx


@dataclass
class Served:
    sim: BinanceSimulator
    clock: FakeClock
    client: httpx.AsyncClient


@pytest.fixture(params=["in_process", "aiohttp_server"], ids=["in-process", "real-server"])
async def served(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Served]:
    """The simulator behind the in-process httpx transport or a real server on 127.0.0.1."""
    sim = make_sim(clock)
    if request.param == "in_process":
        async with httpx.AsyncClient(
            transport=sim.transport(), base_url="http://binance.invalid"
        ) as client:
            yield Served(sim, clock, client)
    else:
        async with (
            SimulatorServer(sim.handle, admin_handler=sim.handle_admin) as server,
            httpx.AsyncClient(base_url=server.url, trust_env=False) as client,
        ):
            assert server.url.startswith("http://127.0.0.1:")
            yield Served(sim, clock, client)


async def test_served_signed_restrictions(served: Served) -> None:
    """A signed apiRestrictions call returns the key's restrictions and the weight header."""
    response = await served.client.get(
        f"{RESTRICTIONS}?{restrictions_query(served.clock)}", headers={"X-MBX-APIKEY": KEY}
    )
    assert response.status_code == 200
    assert response.json()["ipRestrict"] is True
    assert response.headers[SAPI_WEIGHT] == "1"
    ping = await served.client.get(PING)
    assert ping.headers[API_WEIGHT] == "1"


async def test_served_ip_refusal_names_127_0_0_1(served: Served) -> None:
    """A key whitelisted elsewhere is refused with 'request ip: 127.0.0.1'."""
    served.sim.set_ip_whitelist(KEY, ["203.0.113.7"])
    response = await served.client.get(
        f"{RESTRICTIONS}?{restrictions_query(served.clock)}", headers={"X-MBX-APIKEY": KEY}
    )
    assert response.status_code == 401
    assert response.json() == {"code": -2015, "msg": MSG_REJECTED_LOCAL}


async def test_served_raw_query_bytes_are_signed_as_sent(served: Served) -> None:
    """Percent-escapes (upper and lower case) and '+' reach the verifier byte for byte."""
    served.clock.now = DOC_TIMESTAMP / 1000 + 1
    response = await served.client.get(
        f"{RESTRICTIONS}?{B2}&signature={SIG_B2}", headers={"X-MBX-APIKEY": KEY}
    )
    assert response.status_code == 200, response.text
    params = f"note=a+b%7e%ef%bc%91&timestamp={served.clock.ms()}"
    response = await served.client.get(
        f"{RESTRICTIONS}?{signed_query(params, hmac_signer())}", headers={"X-MBX-APIKEY": KEY}
    )
    assert response.status_code == 200, response.text


async def test_served_admin_patch_and_no_secret(served: Served) -> None:
    """Admin PATCH changes the next apiRestrictions answer; admin answers never hold secrets."""
    patched = await served.client.patch(
        f"/_simulator/keys/{KEY}", json={"enableFutures": True, "enableNewFlag": 7}
    )
    assert patched.status_code == 200
    response = await served.client.get(
        f"{RESTRICTIONS}?{restrictions_query(served.clock)}", headers={"X-MBX-APIKEY": KEY}
    )
    assert response.json()["enableFutures"] is True
    assert response.json()["enableNewFlag"] == 7
    for path in ("/_simulator/keys", f"/_simulator/keys/{KEY}", "/_simulator/stats"):
        answer = await served.client.get(path)
        assert answer.status_code == 200
        assert SECRET not in answer.text
    assert SECRET not in patched.text
    faults = await served.client.post("/_simulator/faults", json={"fail_next": 1})
    assert faults.json()["fail_next"] == 1
    assert (await served.client.get(PING)).status_code == 503
    assert (await served.client.get(PING)).status_code == 200


async def test_served_latency_is_applied(served: Served) -> None:
    """A response with injected latency still arrives intact after the delay."""
    served.sim.latency = 0.01
    response = await served.client.get(TIME)
    assert response.json() == {"serverTime": served.clock.ms()}


@pytest.fixture(params=["sync_transport", "thread_server"], ids=["sync-transport", "thread"])
def sync_client(request: pytest.FixtureRequest, sim: BinanceSimulator) -> Iterator[httpx.Client]:
    """A sync httpx client on the in-process sync transport or on serve_in_thread."""
    if request.param == "sync_transport":
        with httpx.Client(transport=sim.sync_transport(), base_url="http://binance.invalid") as c:
            yield c
    else:
        with (
            sim.serve_in_thread() as url,
            httpx.Client(base_url=url, trust_env=False) as client,
        ):
            yield client


def test_sync_serving(sync_client: httpx.Client, sim: BinanceSimulator, clock: FakeClock) -> None:
    """The sync transport and the thread-hosted server answer signed calls and admin calls."""
    headers = {"X-MBX-APIKEY": KEY}
    url = f"{RESTRICTIONS}?{restrictions_query(clock)}"
    assert sync_client.get(url, headers=headers).json()["enableReading"] is True
    sync_client.patch(f"/_simulator/keys/{KEY}", json={"ip_whitelist": ["10.9.9.9"]})
    refused = sync_client.get(url, headers=headers)
    assert refused.json()["msg"] == MSG_REJECTED_LOCAL
    assert refused.headers[SAPI_WEIGHT] == "2"
    assert sim.request_count(KEY) == 2


def test_serve_in_thread_generic_handler() -> None:
    """serve_in_thread serves any handler and stops cleanly when the block ends."""
    seen: list[tuple[str, str, str, bytes, str]] = []

    def handler(
        method: str, path: str, raw_query: str, body: bytes, headers: Any, client_ip: str
    ) -> SimResponse:
        seen.append((method, path, raw_query, body, client_ip))
        return SimResponse(201, {"X-Test": headers.get("x-probe", "")}, b"ok")

    with (
        serve_in_thread(handler) as url,
        httpx.Client(base_url=url, trust_env=False) as client,
    ):
        response = client.post("/any/path?b=%2f&a=1", content=b"body", headers={"X-Probe": "p"})
    assert (response.status_code, response.text, response.headers["X-Test"]) == (201, "ok", "p")
    assert seen == [("POST", "/any/path", "b=%2f&a=1", b"body", LOCAL)]
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, trust_env=False)


async def test_server_stop_is_idempotent() -> None:
    """A SimulatorServer can be stopped twice and has no URL when not running."""
    server = BinanceSimulator().server()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    await server.start()
    await server.stop()
    await server.stop()


# ------------------------------------------------------------------ command-line runner


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        port: int = sock.getsockname()[1]
        return port


def write_keys_file(tmp_path: Path) -> Path:
    (tmp_path / "ed.pem").write_bytes(public_pem(private_key("ed25519")))
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"- api_key: {KEY}\n"
        f"  hmac_secret: '{SECRET}'\n"
        "  restrictions: {enableMargin: true}\n"
        "  ip_whitelist: [127.0.0.1]\n"
        "- api_key: edkey\n"
        "  public_key_pem_file: ed.pem\n",
        encoding="utf-8",
    )
    return keys


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line from the child, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"simulator printed nothing within {timeout}s")
    return proc.stdout.readline()


@pytest.mark.parametrize(
    ("signum", "use_free_port"),
    [(signal.SIGTERM, True), (signal.SIGINT, False)],
    ids=["sigterm-free-port", "sigint-port-0"],
)
def test_cli_serves_and_exits_0_on_signal(
    tmp_path: Path, signum: signal.Signals, use_free_port: bool
) -> None:
    """The runner serves /api/v3/time and signed calls from a keys file, then exits 0."""
    port = free_port() if use_free_port else 0
    command = [sys.executable, "-m", "keymon.simulator", "binance", "--port", str(port)]
    command += ["--keys", str(write_keys_file(tmp_path))]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            line = read_line(proc, timeout=20)
            match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            assert match, line
            if use_free_port:
                assert int(match.group(1)) == port
            with httpx.Client(base_url=match.group(0), trust_env=False, timeout=5) as client:
                server_ms = client.get(TIME).json()["serverTime"]
                query = signed_query(f"timestamp={server_ms}", hmac_signer())
                restrictions = client.get(
                    f"{RESTRICTIONS}?{query}", headers={"X-MBX-APIKEY": KEY}
                ).json()
                ed_query = signed_query(
                    f"timestamp={server_ms}", asymmetric_signer(private_key("ed25519"))
                )
                ed = client.get(f"{RESTRICTIONS}?{ed_query}", headers={"X-MBX-APIKEY": "edkey"})
            assert restrictions["enableMargin"] is True
            assert ed.status_code == 200
            proc.send_signal(signum)
            _, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("args", "keys_yaml", "message"),
    [
        (["binance", "--keys", "{missing}"], None, "cannot read keys file"),
        (["binance", "--keys", "{keys}"], "- [unclosed", "not valid YAML"),
        (["binance", "--keys", "{keys}"], "api_key: x", "must be a YAML list"),
        (["binance", "--keys", "{keys}"], "- {api_key: k1}", "key entry 1: give exactly one"),
        (
            ["binance", "--keys", "{keys}"],
            "- {api_key: k1, hmac_secret: a}\n- {api_key: k2, secret: b}",
            "key entry 2: unknown fields secret",
        ),
        (["binance", "--keys", "{keys}"], "- {api_key: k1, hmac_secret: 123}", "quote it"),
        (
            ["binance", "--keys", "{keys}"],
            "- {api_key: k1, hmac_secret: a, ip_whitelist: [1.2.3.400]}",
            "invalid ip_whitelist entry",
        ),
        (
            ["binance", "--keys", "{keys}"],
            "- {api_key: k1, public_key_pem_file: nothere.pem}",
            "cannot read public key",
        ),
        (["binance", "--port", "70000"], None, "out of range"),
        (["binance", "--latency", "-1"], None, "latency must be"),
        (["nosuchexchange"], None, "invalid choice"),
        ([], None, "required"),
    ],
    ids=[
        "missing-file",
        "bad-yaml",
        "not-a-list",
        "no-secret",
        "unknown-field",
        "numeric-secret",
        "bad-ip",
        "missing-pem",
        "bad-port",
        "bad-latency",
        "unknown-exchange",
        "no-exchange",
    ],
)
def test_cli_bad_input_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    keys_yaml: str | None,
    message: str,
) -> None:
    """Bad arguments or keys files give exit status 2 and one clear line on stderr."""
    keys = tmp_path / "keys.yaml"
    if keys_yaml is not None:
        keys.write_text(keys_yaml, encoding="utf-8")
    argv = [arg.format(keys=keys, missing=tmp_path / "absent.yaml") for arg in args]
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("python -m keymon.simulator: error: ")
    assert message in captured.err


def test_cli_bad_input_in_a_real_process(tmp_path: Path) -> None:
    """As a process, bad input exits 2 with a one-line message and no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "keymon.simulator", "binance", "--keys", str(tmp_path / "x.yaml")],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "cannot read keys file" in result.stderr
    assert "Traceback" not in result.stderr

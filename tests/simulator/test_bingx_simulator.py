"""Tests for the BingX simulator: the official signature vectors, the checks in order, the rate
limit, the key rules, faults and serving.

Requests are signed by the helpers below (not by keymon's adapter), so the simulator is checked
against BingX's documented rules (exchange-apis.md §2.7) and its official vectors only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from keymon.simulator.bingx import BingxSimulator, sign, signed_payload
from tests.conftest import FakeClock

# BingX-API/BingX-spot-api-doc "Signature Authentication".
DOC_KEY = "Zsm4DcrHBTewmVaElrdwA67PmivPv6VDK6JAkiECZ9QfcUnmn67qjCOgvRuZVOzU"
DOC_SECRET = "UuGuyEGt6ZEkpUObCYCmIfh0elYsZVh80jlYwpJuRZEw70t6vomMH7Sjmf94ztSI"
DOC_TIMESTAMP = 1649404670162
V1 = "quoteOrderQty=20&side=BUY&symbol=ETHUSDT&timestamp=1649404670162&type=MARKET"
SIG_V1 = "428a3c383bde514baff0d10d3c20e5adfaacaf799e324546dafe5ccc480dd827"
V2_QUERY = "quoteOrderQty=20&side=BUY&symbol=ETHUSDT"
V2_BODY = "timestamp=1649404670162&type=MARKET"
SIG_V2 = "94e0b4925060a615e1e372d4c929015d4b59d3c89067dc0beeafcfb33a6d8d10"

KEY = "bingxTestKey0001"
SECRET = "bingxTestSecret"
PERMISSIONS = "/openApi/v1/account/apiPermissions"
TIME = "/openApi/swap/v2/server/time"


def now_ms(clock: FakeClock) -> int:
    return round(clock.now * 1000)


def signed_query(ts: int, *, secret: str = SECRET, window: int | None = 5000) -> str:
    """``recvWindow=..&timestamp=..&signature=..``, signed independently of keymon."""
    text = (f"recvWindow={window}&" if window is not None else "") + f"timestamp={ts}"
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    return f"{text}&signature={digest}"


def call(
    sim: BingxSimulator,
    query: str,
    *,
    key: str | None = KEY,
    ip: str = "127.0.0.1",
    path: str = PERMISSIONS,
    body: str = "",
    method: str = "GET",
) -> tuple[int, Any, dict[str, str]]:
    """One request straight into the handler: status, parsed body and headers."""
    headers = {"X-BX-APIKEY": key} if key is not None else {}
    response = sim.handle(method, path, query, body.encode(), headers, ip)
    try:
        parsed = json.loads(response.body)
    except ValueError:
        parsed = response.body
    return response.status, parsed, response.headers


def code_of(result: tuple[int, Any, dict[str, str]]) -> int:
    status, body, _ = result
    assert status == 200  # BingX answers business errors with HTTP 200
    # A success is the bare permissions object (BingX's example answer): code 0.
    return int(body.get("code", 0))


@pytest.fixture
def bingx(clock: FakeClock) -> BingxSimulator:
    """A simulator on the fake clock holding the guide's key (Read + Spot, bound to loopback)."""
    simulator = BingxSimulator(clock=clock)
    simulator.add_key(KEY, SECRET)
    return simulator


# ----------------------------------------------------------------------------- official vectors


def test_official_vectors_sign() -> None:
    """Both documented examples reproduce: the query string, and query + body unseparated."""
    assert sign(DOC_SECRET, V1) == SIG_V1
    assert sign(DOC_SECRET, V2_QUERY + V2_BODY) == SIG_V2


@pytest.mark.parametrize(
    ("raw_query", "body", "expected"),
    [
        (f"{V1}&signature={SIG_V1}", "", V1),
        (V2_QUERY, f"{V2_BODY}&signature={SIG_V2}", V2_QUERY + V2_BODY),
        (f"signature={SIG_V1}&{V1}", "", V1),
        ("a=%7e&b=+", "", "a=%7e&b=+"),
    ],
    ids=["query", "query-then-body", "signature-first", "bytes-kept"],
)
def test_signed_payload_layout(raw_query: str, body: str, expected: str) -> None:
    """The signed text is the raw query then the raw body, minus the signature parameter."""
    assert signed_payload(raw_query, body) == expected.encode()


@pytest.mark.parametrize(
    ("query", "body"),
    [(f"{V1}&signature={SIG_V1}", ""), (V2_QUERY, f"{V2_BODY}&signature={SIG_V2}")],
    ids=["query-vector", "joined-vector"],
)
def test_official_vector_requests_are_accepted(query: str, body: str) -> None:
    """A request carrying a documented signature, one second after its timestamp, is served."""
    sim = BingxSimulator(clock=FakeClock(DOC_TIMESTAMP / 1000 + 1))
    sim.add_key(DOC_KEY, DOC_SECRET, ips=[])
    status, answer, _ = call(sim, query, key=DOC_KEY, body=body)
    assert status == 200, answer
    assert answer["apiKey"] == DOC_KEY


@pytest.mark.parametrize(
    ("query", "body"),
    [(f"{V1}&signature={SIG_V1}", ""), (V2_QUERY, f"{V2_BODY}&signature={SIG_V2}")],
    ids=["query-vector", "joined-vector"],
)
def test_official_vector_requests_one_char_change_rejected(query: str, body: str) -> None:
    """One changed character in the signed parameters gives 100001."""
    sim = BingxSimulator(clock=FakeClock(DOC_TIMESTAMP / 1000 + 1))
    sim.add_key(DOC_KEY, DOC_SECRET, ips=[])
    query, body = (part.replace("ETHUSDT", "ETHUSDC") for part in (query, body))
    assert code_of(call(sim, query, key=DOC_KEY, body=body)) == 100001


# ----------------------------------------------------------------------------- answers


def test_server_time_is_unsigned(bingx: BingxSimulator, clock: FakeClock) -> None:
    """The server time answers the envelope with serverTime in ms."""
    status, body, _ = call(bingx, "", key=None, path=TIME)
    assert status == 200
    assert body["code"] == 0
    assert body["data"] == {"serverTime": now_ms(clock)}


def test_documented_answer(bingx: BingxSimulator, clock: FakeClock) -> None:
    """A good request gets {apiKey, permissions, ipAddresses, note}, bare as in BingX's example
    answer, and the limit headers."""
    status, body, headers = call(bingx, signed_query(now_ms(clock)))
    assert status == 200
    assert body == {
        "apiKey": KEY,
        "permissions": [1, 2],
        "ipAddresses": ["127.0.0.1"],
        "note": "keymon",
    }
    assert headers["X-RateLimit-Requests-Remain"] == "1"
    assert int(headers["X-RateLimit-Requests-Expire"]) > now_ms(clock)


def test_wrapped_answer(bingx: BingxSimulator, clock: FakeClock) -> None:
    """With set_wrap_permissions the same object comes inside the envelope."""
    bingx.set_wrap_permissions(True)
    status, body, _ = call(bingx, signed_query(now_ms(clock)))
    assert status == 200
    assert (body["code"], body["msg"]) == (0, "")
    assert body["data"]["permissions"] == [1, 2]


# ----------------------------------------------------------------------------- refusals


def test_missing_key_header(bingx: BingxSimulator, clock: FakeClock) -> None:
    """No X-BX-APIKEY: 100413."""
    assert code_of(call(bingx, signed_query(now_ms(clock)), key=None)) == 100413


def test_unknown_and_deleted_keys(bingx: BingxSimulator, clock: FakeClock) -> None:
    """An unknown key, and a deleted one, answer 100413 "Incorrect apiKey"."""
    assert code_of(call(bingx, signed_query(now_ms(clock)), key="someone")) == 100413
    bingx.delete_key(KEY)
    _, body, _ = call(bingx, signed_query(now_ms(clock)))
    assert (body["code"], body["msg"]) == (100413, "Incorrect apiKey")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("recvWindow=5000", 100421),
        ("timestamp=abc&signature=00", 80014),
        ("recvWindow=x&timestamp={ts}&signature=00", 80014),
        ("timestamp={ts}", 100412),
    ],
    ids=["no-timestamp", "timestamp-not-a-number", "window-not-a-number", "no-signature"],
)
def test_parameter_refusals(bingx: BingxSimulator, clock: FakeClock, query: str, code: int) -> None:
    """Missing or malformed timestamp, recvWindow and signature have their own codes."""
    assert code_of(call(bingx, query.format(ts=now_ms(clock)))) == code


@pytest.mark.parametrize(
    ("offset_ms", "window", "code"),
    [
        (-4999, None, 0),
        (-5001, None, 100421),
        (5001, None, 100421),
        (-1999, 2000, 0),
        (-2001, 2000, 100421),
    ],
    ids=["4999-old", "5001-old", "5001-ahead", "in-own-window", "past-own-window"],
)
def test_timestamp_window(
    bingx: BingxSimulator, clock: FakeClock, offset_ms: int, window: int | None, code: int
) -> None:
    """A timestamp more than recvWindow (default 5000 ms) from server time is 100421."""
    ts = now_ms(clock) + offset_ms
    query = signed_query(ts, window=window) if window is not None else signed_query(ts, window=None)
    assert code_of(call(bingx, query)) == code


def test_server_clock_skew_moves_the_window(bingx: BingxSimulator, clock: FakeClock) -> None:
    """With the server clock a minute ahead, the local timestamp is refused."""
    bingx.clock_skew_ms = 60_000
    assert code_of(call(bingx, signed_query(now_ms(clock)))) == 100421
    assert code_of(call(bingx, signed_query(now_ms(clock) + 60_000))) == 0


def test_wrong_secret(bingx: BingxSimulator, clock: FakeClock) -> None:
    """A signature under another secret is 100001."""
    assert code_of(call(bingx, signed_query(now_ms(clock), secret="nope"))) == 100001


def test_ip_whitelist_names_the_refused_ip(bingx: BingxSimulator, clock: FakeClock) -> None:
    """A client IP off the whitelist is 100419, and the message names it."""
    _, body, _ = call(bingx, signed_query(now_ms(clock)), ip="192.0.2.7")
    assert body["code"] == 100419
    assert "your current request IP is 192.0.2.7 does not match IP whitelist" in body["msg"]
    bingx.update_key(KEY, ips=[])
    assert code_of(call(bingx, signed_query(now_ms(clock)), ip="192.0.2.7")) == 0


def test_read_permission_is_needed(bingx: BingxSimulator, clock: FakeClock) -> None:
    """A key without Read (code 2) is refused with 100004."""
    bingx.update_key(KEY, permissions=[1])
    assert code_of(call(bingx, signed_query(now_ms(clock)))) == 100004


# ----------------------------------------------------------------------------- rate limit


def test_two_requests_per_second_per_uid(bingx: BingxSimulator, clock: FakeClock) -> None:
    """The third call in one second is 100410; the next second is fresh."""
    codes = [code_of(call(bingx, signed_query(now_ms(clock)))) for _ in range(3)]
    assert codes == [0, 0, 100410]
    assert bingx.count_100410 == 1
    _, _, headers = call(bingx, signed_query(now_ms(clock)))
    assert headers["X-RateLimit-Requests-Remain"] == "0"
    clock.advance(1)
    assert code_of(call(bingx, signed_query(now_ms(clock)))) == 0


def test_the_limit_is_per_uid(clock: FakeClock) -> None:
    """Two keys of one UID share the limit; a key of another UID does not."""
    sim = BingxSimulator(clock=clock, limit_per_second=1)
    sim.add_key(KEY, SECRET, uid="1")
    sim.add_key("second", "s2", uid="1")
    sim.add_key("other", "s3", uid="2")
    assert code_of(call(sim, signed_query(now_ms(clock)))) == 0
    second = signed_query(now_ms(clock), secret="s2")
    assert code_of(call(sim, second, key="second")) == 100410
    assert code_of(call(sim, signed_query(now_ms(clock), secret="s3"), key="other")) == 0


# ----------------------------------------------------------------------------- key rules


def test_key_rules(bingx: BingxSimulator) -> None:
    """Withdrawal needs an IP binding; IPv4 only, at most 20; documented codes only."""
    with pytest.raises(ValueError, match="withdrawal"):
        bingx.add_key("w", "s", permissions=[2, 5], ips=[])
    with pytest.raises(ValueError, match="withdrawal"):
        bingx.update_key(KEY, permissions=[1, 2, 5], ips=[])
    with pytest.raises(ValueError, match="20"):
        bingx.add_key("many", "s", ips=[f"10.0.0.{i}" for i in range(21)])
    with pytest.raises(ValueError, match="IPv4"):
        bingx.add_key("cidr", "s", ips=["10.0.0.0/8"])
    with pytest.raises(ValueError, match="codes"):
        bingx.add_key("odd", "s", permissions=[2, 9])
    with pytest.raises(ValueError, match="exists"):
        bingx.add_key(KEY, "s")


@pytest.mark.parametrize(
    ("permissions", "ips", "deleted"),
    [([1, 2], [], True), ([2], [], False), ([1, 2], ["127.0.0.1"], False)],
    ids=["unbound-trading", "unbound-read-only", "bound-trading"],
)
def test_idle_deletion(
    clock: FakeClock, permissions: list[int], ips: list[str], deleted: bool
) -> None:
    """Only a key bound to no IP that can trade or transfer goes after 14 idle days."""
    sim = BingxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, permissions=permissions, ips=ips)
    clock.advance(14 * 86400 + 1)
    assert code_of(call(sim, signed_query(now_ms(clock)))) == (100413 if deleted else 0)
    assert sim.deleted_idle == ([KEY] if deleted else [])


def test_use_keeps_an_unbound_key(clock: FakeClock) -> None:
    """A call every 13 days counts as use: the unbound trading key survives."""
    sim = BingxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, permissions=[1, 2], ips=[])
    for _ in range(4):
        clock.advance(13 * 86400)
        assert code_of(call(sim, signed_query(now_ms(clock)))) == 0


# ----------------------------------------------------------------------------- faults, serving


def test_routes(bingx: BingxSimulator, clock: FakeClock) -> None:
    """Unknown paths are 404; apiPermissions is GET only."""
    assert call(bingx, "", path="/openApi/v1/account/apiRestrictions")[0] == 404
    assert call(bingx, signed_query(now_ms(clock)), method="POST")[0] == 405


def test_faults(bingx: BingxSimulator, clock: FakeClock) -> None:
    """fail_next answers a status with HTML; truncate_next halves the body; latency delays."""
    bingx.fail_next(1, 502)
    assert call(bingx, signed_query(now_ms(clock)))[0] == 502
    bingx.truncate_next(1)
    _, body, _ = call(bingx, signed_query(now_ms(clock)))
    assert isinstance(body, bytes)
    bingx.latency = 0.25
    response = bingx.handle("GET", TIME, "", b"", {}, "127.0.0.1")
    assert response.delay == 0.25


def test_requests_are_counted(bingx: BingxSimulator, clock: FakeClock) -> None:
    """request_count counts every request that named the key."""
    call(bingx, signed_query(now_ms(clock)))
    call(bingx, "timestamp=1")
    assert bingx.request_count(KEY) == 2


def test_served_on_a_real_port(bingx: BingxSimulator, clock: FakeClock) -> None:
    """The simulator answers over a real socket on 127.0.0.1."""
    with bingx.serve_in_thread() as base_url, httpx.Client(base_url=base_url) as client:
        response = client.get(
            f"{PERMISSIONS}?{signed_query(now_ms(clock))}", headers={"X-BX-APIKEY": KEY}
        )
    assert response.status_code == 200
    assert response.json()["permissions"] == [1, 2]

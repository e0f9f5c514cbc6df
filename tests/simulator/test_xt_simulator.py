"""The XT simulator: the documented X + Y signing, codes, the user-center listing of the
account's keys, in-process and served."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keymon.simulator.xt import XtSimulator, signature_payload
from tests.conftest import FakeClock

KEY = "xtSimKey"
SECRET = "xtSimSecret"
API_KEY = "/v4/user/account/api-key"
VECTOR_HEADERS = {
    "validate-algorithms": "HmacSHA256",
    "validate-appkey": "testkey",
    "validate-recvwindow": "5000",
    "validate-timestamp": "1700000000000",
}


def test_payload_and_signature_reproduce_the_derived_vector() -> None:
    """exchange-apis.md §2.11: GET /v4/balances, no query, recvwindow 5000."""
    payload = signature_payload(VECTOR_HEADERS, "GET", "/v4/balances", "", "")
    assert payload == (
        "validate-algorithms=HmacSHA256&validate-appkey=testkey&validate-recvwindow=5000"
        "&validate-timestamp=1700000000000#GET#/v4/balances"
    )
    assert (
        hmac.new(b"testsecret", payload.encode(), hashlib.sha256).hexdigest()
        == "e66f1bb13d3266a402cc8d7cc2bcb3a561127e7cf92585df7bee3b116cf21876"
    )


def test_payload_sorts_the_query_and_keeps_the_body_raw() -> None:
    """XT: ``Y = #method#path#query#body``, query pairs sorted by key, JSON body as sent."""
    payload = signature_payload(VECTOR_HEADERS, "POST", "/v4/order", "b=2&a=1", '{"z":1}')
    assert payload.endswith('#POST#/v4/order#a=1&b=2#{"z":1}')


@pytest.fixture
def sim(clock: FakeClock) -> XtSimulator:
    simulator = XtSimulator(clock=clock)
    simulator.add_key(KEY, SECRET)
    return simulator


class _SyncOver(httpx.BaseTransport):
    def __init__(self, sim: XtSimulator) -> None:
        self._sim = sim

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self._sim.handle(
            request.method,
            request.url.path,
            request.url.query.decode(),
            request.read(),
            dict(request.headers),
            "127.0.0.1",
        )
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body)


@pytest.fixture(params=["in-process", "served"])
def client(request: pytest.FixtureRequest, sim: XtSimulator) -> Iterator[httpx.Client]:
    with contextlib.ExitStack() as stack:
        if request.param == "served":
            base = stack.enter_context(sim.serve_in_thread())
            yield stack.enter_context(httpx.Client(base_url=base))
        else:
            yield stack.enter_context(
                httpx.Client(transport=_SyncOver(sim), base_url="http://xt.test")
            )


def get(
    client: httpx.Client,
    clock: FakeClock,
    *,
    secret: str = SECRET,
    key: str = KEY,
    offset_ms: int = 0,
    window: str = "5000",
    algorithm: str = "HmacSHA256",
    query: str = "",
    drop: str | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {
        "validate-algorithms": algorithm,
        "validate-appkey": key,
        "validate-recvwindow": window,
        "validate-timestamp": str(int(clock.now * 1000) + offset_ms),
    }
    digest = getattr(hashlib, algorithm.removeprefix("Hmac").lower(), hashlib.sha256)
    payload = signature_payload(headers, "GET", API_KEY, query, "")
    headers["validate-signature"] = hmac.new(secret.encode(), payload.encode(), digest).hexdigest()
    if drop is not None:
        del headers[drop]
    url = API_KEY + (f"?{query}" if query else "")
    response = client.get(url, headers=headers)
    return response.status_code, response.json()


def test_time_endpoint(client: httpx.Client, clock: FakeClock) -> None:
    body = client.get("/v4/public/time").json()
    assert body == {
        "rc": 0,
        "mc": "SUCCESS",
        "ma": [],
        "result": {"serverTime": int(clock.now * 1000)},
    }


def test_accepted_request_lists_the_key_as_xts_example(
    client: httpx.Client, clock: FakeClock
) -> None:
    status, body = get(client, clock)
    assert status == 200
    assert (body["rc"], body["mc"], body["ma"]) == (0, "SUCCESS", [{}])
    [entry] = body["result"]
    assert set(entry) == {
        "id",
        "userAccountId",
        "userAccountLevel",
        "userId",
        "keyName",
        "bindIps",
        "accessKey",
        "secretKey",
        "isLock",
        "roleScopes",
        "tags",
        "createTime",
        "updateTime",
    }
    assert entry["accessKey"] == KEY
    assert entry["roleScopes"] == "QUERY,TRADE"
    assert entry["bindIps"] == "127.0.0.1"
    assert entry["isLock"] == 0


def test_listing_holds_the_accounts_other_keys_and_their_changes(
    client: httpx.Client, sim: XtSimulator, clock: FakeClock
) -> None:
    sim.add_key("other", "otherSecret", ips=[], role_scopes=["QUERY", "WITHDRAW"])
    sim.add_key("stranger", "s", account_id="999")
    sim.update_key(KEY, role_scopes=["QUERY", "TRADE", "FUTURE"], is_lock=True)
    by_key = {e["accessKey"]: e for e in get(client, clock)[1]["result"]}
    assert set(by_key) == {KEY, "other"}
    assert by_key["other"]["bindIps"] == ""
    assert by_key[KEY]["roleScopes"] == "QUERY,TRADE,FUTURE"
    assert by_key[KEY]["isLock"] == 1


def test_query_is_signed_sorted(client: httpx.Client, clock: FakeClock) -> None:
    """The server sorts the query before checking: a client that sorts it too is accepted."""
    assert get(client, clock, query="keyName=desk&isLock=0")[1]["rc"] == 0


@pytest.mark.parametrize("algorithm", ["HmacSHA512", "HmacSHA1", "HmacMD5"])
def test_other_documented_algorithms(
    client: httpx.Client, clock: FakeClock, algorithm: str
) -> None:
    assert get(client, clock, algorithm=algorithm)[1]["rc"] == 0


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"key": "nobody"}, "AUTH_101"),
        ({"secret": "wrong"}, "AUTH_103"),
        ({"offset_ms": -5000}, "AUTH_105"),
        ({"offset_ms": 1500}, "AUTH_105"),
        ({"window": "70000"}, "AUTH_004"),
        ({"window": "soon"}, "AUTH_004"),
        ({"algorithm": "HmacSHA3"}, "AUTH_006"),
        ({"drop": "validate-appkey"}, "AUTH_001"),
        ({"drop": "validate-timestamp"}, "AUTH_002"),
        ({"drop": "validate-recvwindow"}, "AUTH_003"),
        ({"drop": "validate-algorithms"}, "AUTH_005"),
        ({"drop": "validate-signature"}, "AUTH_007"),
    ],
    ids=[
        "unknown-key",
        "wrong-secret",
        "outdated",
        "ahead",
        "window-too-long",
        "window-not-a-number",
        "unknown-algorithm",
        "no-appkey",
        "no-timestamp",
        "no-recvwindow",
        "no-algorithms",
        "no-signature",
    ],
)
def test_refusals(
    client: httpx.Client, clock: FakeClock, kwargs: dict[str, Any], code: str
) -> None:
    status, body = get(client, clock, **kwargs)
    assert (status, body["rc"], body["mc"], body["result"]) == (200, 1, code, None)


def test_longer_window_accepts_an_older_timestamp(client: httpx.Client, clock: FakeClock) -> None:
    assert get(client, clock, offset_ms=-30_000, window="60000")[1]["rc"] == 0


@pytest.mark.parametrize("state", ["frozen", "expired", "disabled"])
def test_unusable_key_is_not_activated(
    client: httpx.Client, sim: XtSimulator, clock: FakeClock, state: str
) -> None:
    sim.update_key(KEY, state=state)
    assert get(client, clock)[1]["mc"] == "AUTH_102"


def test_unbound_ip(client: httpx.Client, sim: XtSimulator, clock: FakeClock) -> None:
    sim.update_key(KEY, ips=["10.9.9.9"])
    assert get(client, clock)[1]["mc"] == "AUTH_104"
    sim.update_key(KEY, ips=["127.0.0.0/8"])
    assert get(client, clock)[1]["rc"] == 0


def test_rate_limit_is_http_429(client: httpx.Client, sim: XtSimulator, clock: FakeClock) -> None:
    sim.set_rate_limit(1, 60)
    assert get(client, clock)[0] == 200
    status, body = get(client, clock)
    assert (status, body["mc"]) == (429, "429")

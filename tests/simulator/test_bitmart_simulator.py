"""The BitMart simulator: the documented signing, codes and statuses, in-process and served."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keymon.simulator.bitmart import BitmartSimulator, sign
from tests.conftest import FakeClock

KEY = "bmSimKey"
SECRET = "bmSimSecret"
MEMO = "bmSimMemo"
PATH = "/spot/v4/query/open-orders"
BODY = '{"limit":1}'


def test_sign_reproduces_the_derived_vector() -> None:
    """exchange-apis.md §2.8: pre-hash ``1700000000000#testmemo#``."""
    assert (
        sign("testsecret", "1700000000000", "testmemo", "")
        == "893b552ce11ddcdb711b525c2736cf0b10c4009b8e3c961a550685ed2b42623f"
    )


@pytest.fixture
def sim(clock: FakeClock) -> BitmartSimulator:
    simulator = BitmartSimulator(clock=clock)
    simulator.add_key(KEY, SECRET, MEMO)
    return simulator


@pytest.fixture(params=["in-process", "served"])
def client(request: pytest.FixtureRequest, sim: BitmartSimulator) -> Iterator[httpx.Client]:
    with contextlib.ExitStack() as stack:
        if request.param == "served":
            base = stack.enter_context(sim.serve_in_thread())
            yield stack.enter_context(httpx.Client(base_url=base))
        else:
            yield stack.enter_context(
                httpx.Client(transport=_SyncOver(sim), base_url="http://bitmart.test")
            )


class _SyncOver(httpx.BaseTransport):
    """Calls the simulator's handler directly from a sync client."""

    def __init__(self, sim: BitmartSimulator) -> None:
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


def post(
    client: httpx.Client,
    clock: FakeClock,
    *,
    secret: str = SECRET,
    memo: str = MEMO,
    key: str = KEY,
    offset_ms: int = 0,
    body: str = BODY,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    timestamp = str(int(clock.now * 1000) + offset_ms)
    sent = {
        "X-BM-KEY": key,
        "X-BM-TIMESTAMP": timestamp,
        "X-BM-SIGN": sign(secret, timestamp, memo, body),
        "Content-Type": "application/json",
    }
    sent.update(headers or {})
    response = client.post(PATH, content=body, headers={k: v for k, v in sent.items() if v})
    return response.status_code, response.json()


def test_time_endpoint_answers_server_time(client: httpx.Client, clock: FakeClock) -> None:
    body = client.get("/system/time").json()
    assert body["code"] == 1000
    assert body["data"]["server_time"] == int(clock.now * 1000)


def test_accepted_request(client: httpx.Client, clock: FakeClock) -> None:
    status, body = post(client, clock)
    assert status == 200
    assert body["code"] == 1000
    assert isinstance(body["data"], list)
    assert "trace" in body


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"key": "nobody"}, 401, 30002),
        ({"secret": "wrong"}, 401, 30005),
        ({"memo": "wrongmemo"}, 401, 30005),
        ({"offset_ms": -61_000, "body": '{"recvWindow":60000}'}, 401, 30007),
        ({"offset_ms": 61_000}, 401, 30007),
        ({"offset_ms": -6000}, 401, 30007),
        ({"headers": {"X-BM-KEY": ""}}, 401, 30001),
        ({"headers": {"X-BM-SIGN": ""}}, 401, 30004),
        ({"headers": {"X-BM-TIMESTAMP": ""}}, 401, 30006),
        ({"headers": {"X-BM-TIMESTAMP": "soon"}}, 401, 30008),
    ],
    ids=[
        "unknown-key",
        "wrong-secret",
        "wrong-memo",
        "over-a-minute",
        "ahead",
        "past-default-recv-window",
        "no-key",
        "no-sign",
        "no-timestamp",
        "bad-timestamp",
    ],
)
def test_refusals(
    client: httpx.Client, clock: FakeClock, kwargs: dict[str, Any], status: int, code: int
) -> None:
    got_status, body = post(client, clock, **kwargs)
    assert (got_status, body["code"]) == (status, code)


def test_body_recv_window_widens_to_a_minute(client: httpx.Client, clock: FakeClock) -> None:
    status, body = post(client, clock, offset_ms=-50_000, body='{"recvWindow":60000}')
    assert (status, body["code"]) == (200, 1000)


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [("frozen", 401, 30003), ("expired", 403, 30011), ("disabled", 403, 30012)],
)
def test_key_states(
    client: httpx.Client,
    sim: BitmartSimulator,
    clock: FakeClock,
    state: str,
    status: int,
    code: int,
) -> None:
    sim.update_key(KEY, state=state)
    got_status, body = post(client, clock)
    assert (got_status, body["code"]) == (status, code)


def test_ip_forbidden(client: httpx.Client, sim: BitmartSimulator, clock: FakeClock) -> None:
    sim.update_key(KEY, ips=["10.9.9.9"])
    status, body = post(client, clock)
    assert (status, body["code"]) == (403, 30010)
    sim.update_key(KEY, ips=[])
    assert post(client, clock)[0] == 200


def test_rate_limit(client: httpx.Client, sim: BitmartSimulator, clock: FakeClock) -> None:
    sim.set_rate_limit(1, 60)
    assert post(client, clock)[0] == 200
    status, body = post(client, clock)
    assert (status, body["code"]) == (429, 30013)


def test_memo_never_leaves_the_admin_api(sim: BitmartSimulator) -> None:
    with sim.serve_in_thread() as base:
        text = httpx.get(f"{base}/_simulator/keys").text
    assert KEY in text
    assert MEMO not in text
    assert SECRET not in text


def test_unknown_path_is_30000(client: httpx.Client) -> None:
    response = client.get("/spot/v1/wallet")
    assert response.status_code == 404
    assert json.loads(response.content)["code"] == 30000

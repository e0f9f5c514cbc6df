"""The LBank simulator against exchange-apis.md §2.12: the derived vector, and its answers to
hand-signed form POSTs, in-process and over a real port on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from keymon.simulator.lbank import (
    RESTRICTIONS_PATH,
    TIME_PATH,
    TIMESTAMP_WINDOW_MS,
    LbankSimulator,
    sign,
)
from keymon.simulator.server import SimulatorSyncTransport
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
ECHOSTR = "P3LHfw6tUIYWc8R2VQNy0ilKmdg5pjhbxC7"


def test_sign_reproduces_the_derived_vector() -> None:
    params = {
        "api_key": KEY,
        "echostr": ECHOSTR,
        "signature_method": "HmacSHA256",
        "timestamp": "1700000000000",
    }
    assert sign(SECRET, params) == (
        "E6456350952CD085EE94DE6B8E6FB07F",
        "12c239c2956e5196b032d3601c34432fb50a5643d8ada8af6ea2980392403baf",
    )


@pytest.fixture(params=["in-process", "served"])
def client(
    request: pytest.FixtureRequest, clock: FakeClock
) -> Iterator[tuple[LbankSimulator, httpx.Client]]:
    sim = LbankSimulator(clock=clock)
    sim.add_key(KEY, SECRET)
    if request.param == "served":
        with sim.serve_in_thread() as base_url, httpx.Client(base_url=base_url) as c:
            yield sim, c
    else:
        transport = SimulatorSyncTransport(sim.handle, admin_handler=sim.handle_admin)
        with httpx.Client(base_url="http://lbank.test", transport=transport) as c:
            yield sim, c


def signed_post(
    c: httpx.Client,
    ts: int,
    *,
    secret: str = SECRET,
    key: str = KEY,
    echostr: str = ECHOSTR,
    headers: dict[str, str] | None = None,
    drop: str | None = None,
) -> dict[str, Any]:
    """The request as exchange-apis.md §2.12 describes it, signed by hand."""
    params = {
        "api_key": key,
        "echostr": echostr,
        "signature_method": "HmacSHA256",
        "timestamp": str(ts),
    }
    params["sign"] = sign(secret, params)[1]
    if drop:
        params.pop(drop)
    sent_headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "timestamp": str(ts),
        "signature_method": "HmacSHA256",
        "echostr": echostr,
        **(headers or {}),
    }
    response = c.post(RESTRICTIONS_PATH, content=urlencode(params), headers=sent_headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def now_ms(clock: FakeClock) -> int:
    return int(clock.now * 1000)


def test_time_is_the_server_clock(client: tuple[Any, httpx.Client], clock: FakeClock) -> None:
    _sim, c = client
    body = c.get(TIME_PATH).json()
    assert body["result"] == "true"
    assert body["data"] == now_ms(clock)


def test_signed_request_is_accepted(client: tuple[Any, httpx.Client], clock: FakeClock) -> None:
    _sim, c = client
    body = signed_post(c, now_ms(clock))
    assert body["result"] == "true"
    assert body["error_code"] == 0
    assert isinstance(body["data"], dict)


def test_parameters_in_the_query_string_are_accepted(
    client: tuple[Any, httpx.Client], clock: FakeClock
) -> None:
    """LBank's Java connector sends the parameters in the URL of the POST."""
    _sim, c = client
    ts = str(now_ms(clock))
    params = {"api_key": KEY, "echostr": ECHOSTR, "signature_method": "HmacSHA256", "timestamp": ts}
    params["sign"] = sign(SECRET, params)[1]
    headers = {"timestamp": ts, "signature_method": "HmacSHA256", "echostr": ECHOSTR}
    response = c.post(f"{RESTRICTIONS_PATH}?{urlencode(params)}", headers=headers)
    assert response.json()["result"] == "true"


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong-secret", 10007),
        ("unknown-key", 10005),
        ("missing-sign", 10001),
        ("short-echostr", 10031),
        ("header-mismatch", 10002),
        ("stale", 10600),
        ("ahead", 10600),
        ("foreign-ip", 10022),
        ("frozen", 10005),
        ("expired", 10005),
        ("disabled", 10005),
    ],
)
def test_refusals(
    client: tuple[LbankSimulator, httpx.Client], clock: FakeClock, case: str, code: int
) -> None:
    sim, c = client
    ts = now_ms(clock)
    if case == "wrong-secret":
        body = signed_post(c, ts, secret="wrong")
    elif case == "unknown-key":
        body = signed_post(c, ts, key="nobody")
    elif case == "missing-sign":
        body = signed_post(c, ts, drop="sign")
    elif case == "short-echostr":
        body = signed_post(c, ts, echostr="abc")
    elif case == "header-mismatch":
        body = signed_post(c, ts, headers={"timestamp": str(ts + 1)})
    elif case == "stale":
        body = signed_post(c, ts - TIMESTAMP_WINDOW_MS - 1)
    elif case == "ahead":
        body = signed_post(c, ts + TIMESTAMP_WINDOW_MS + 1)
    elif case == "foreign-ip":
        sim.update_key(KEY, ips=["10.9.9.9"])
        body = signed_post(c, ts)
    else:
        sim.update_key(KEY, state=case)
        body = signed_post(c, ts)
    assert body["result"] == "false"
    assert body["error_code"] == code


def test_stamp_inside_the_window_is_accepted(
    client: tuple[Any, httpx.Client], clock: FakeClock
) -> None:
    _sim, c = client
    assert signed_post(c, now_ms(clock) - TIMESTAMP_WINDOW_MS)["result"] == "true"


def test_rate_limit_is_10004(client: tuple[LbankSimulator, httpx.Client], clock: FakeClock) -> None:
    sim, c = client
    sim.set_rate_limit(1, 60)
    assert signed_post(c, now_ms(clock))["result"] == "true"
    assert signed_post(c, now_ms(clock))["error_code"] == 10004


def test_unbound_key_is_accepted_from_anywhere(
    client: tuple[LbankSimulator, httpx.Client], clock: FakeClock
) -> None:
    sim, c = client
    sim.update_key(KEY, ips=[])
    assert signed_post(c, now_ms(clock))["result"] == "true"

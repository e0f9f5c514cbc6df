"""The HTTP client every adapter is handed (:func:`keymon.exchanges.base.build_client`) and the
URL each request goes to (:meth:`keymon.exchanges.common.AdapterBase._url`)."""

from __future__ import annotations

import httpx
import pytest

from keymon.exchanges.base import build_client
from keymon.exchanges.binance import (
    ACCOUNT_STATUS_PATH,
    RESTRICTIONS_PATH,
    TIME_PATH,
    BinanceAdapter,
    BinanceSettings,
)
from keymon.exchanges.common import _URL_CACHE_SIZE

BASE = "https://binance.test"


def _client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return build_client(
        exchange="binance",
        base_url=BASE,
        allowlist=BinanceAdapter.read_only_endpoints,
        timeout=5.0,
        transport=handler,
    )


async def test_a_cookie_an_exchange_sets_is_not_sent_back_by_httpx() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={}, headers={"Set-Cookie": "session=abc; Path=/"})

    async with _client(httpx.MockTransport(answer)) as client:
        await client.get(TIME_PATH)
        await client.get(TIME_PATH)
        assert not client.cookies
        with pytest.raises(TypeError, match="no cookies"):
            client.cookies.set("session", "abc")
    assert [r.headers.get("Cookie") for r in seen] == [None, None]


async def test_each_request_goes_to_the_path_under_the_base_url() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"serverTime": 1})

    async with _client(httpx.MockTransport(answer)) as client:
        adapter = BinanceAdapter(client, BinanceSettings(base_url=BASE))
        for path in (TIME_PATH, RESTRICTIONS_PATH, TIME_PATH, ACCOUNT_STATUS_PATH):
            await adapter._send("GET", path)
        # The query an auth or params add is kept apart from the cached URL.
        await adapter._send("GET", TIME_PATH, params={"a": "1"})
    assert seen == [
        f"{BASE}{TIME_PATH}",
        f"{BASE}{RESTRICTIONS_PATH}",
        f"{BASE}{TIME_PATH}",
        f"{BASE}{ACCOUNT_STATUS_PATH}",
        f"{BASE}{TIME_PATH}?a=1",
    ]


def test_the_merged_urls_kept_are_bounded() -> None:
    client = build_client(exchange="binance", base_url=BASE, allowlist=frozenset(), timeout=5.0)
    adapter = BinanceAdapter(client, BinanceSettings(base_url=BASE))
    urls = [adapter._url(f"/p/{i}") for i in range(_URL_CACHE_SIZE + 10)]
    assert [str(u) for u in urls] == [f"{BASE}/p/{i}" for i in range(_URL_CACHE_SIZE + 10)]
    assert len(adapter._urls) == _URL_CACHE_SIZE

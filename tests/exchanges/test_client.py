"""The HTTP client every adapter is handed (:func:`keymon.exchanges.base.build_client`), how it
sends an adapter's request (:meth:`~keymon.exchanges.base.ExchangeClient.fetch`), and the URL
each request goes to (:meth:`keymon.exchanges.common.AdapterBase._url`,
:func:`~keymon.exchanges.base.with_query`)."""

from __future__ import annotations

import gzip
import ssl
from collections.abc import Generator

import httpx
import pytest

from keymon.errors import ForbiddenRequest
from keymon.exchanges.base import (
    _CANONICAL_QUERY,
    ExchangeClient,
    build_client,
    read_response,
    tls_context,
    with_query,
)
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


#: Queries as adapters build them (already canonical), and ones httpx must quote or keep.
QUERIES = [
    "recvWindow=5000&timestamp=1499827319559&signature=c8db56825ae71d6d79447849e617115f4a92",
    "AccessKeyId=e2xxxxxx-99xxxxxx&SignatureMethod=HmacSHA256&Timestamp=2017-05-11T15:19:30",
    "a=1,2;b=(x)*!$'~._-:/?@[]",
    "",
    "t=2017-05-11T15%3A19%3A30&s=abc%2Fdef%3D",
    "q=a b&c=<d>",
    'x="quoted"&y=#frag',
    "name=caf\u00e9&sym=\u00a5",
    "bad=%zz&odd=100%",
]


@pytest.mark.parametrize("query", QUERIES)
def test_a_query_replaced_reads_as_httpx_would_have_made_it(query: str) -> None:
    """with_query is url.copy_with(query=...) exactly, whether or not it skips the re-parse:
    the same URL, or the same refusal (a ``#``, a character that is not ASCII)."""
    url = httpx.URL(f"{BASE}/sapi/v1/account/apiRestrictions?old=1")
    try:
        expected = url.copy_with(query=query.encode())
    except (httpx.InvalidURL, UnicodeError) as refused:
        with pytest.raises(type(refused)):
            with_query(url, query)
        return
    got = with_query(url, query)
    assert got == expected
    assert (str(got), got.query, got.raw_path) == (
        str(expected),
        expected.query,
        expected.raw_path,
    )
    assert str(url) == f"{BASE}/sapi/v1/account/apiRestrictions?old=1"  # the original is kept


def test_the_queries_tried_include_both_paths() -> None:
    """Some of QUERIES take the shortcut, some httpx's parser, some are refused."""
    url = httpx.URL(BASE)
    kinds = set()
    for query in QUERIES:
        try:
            url.copy_with(query=query.encode())
        except (httpx.InvalidURL, UnicodeError):
            kinds.add("refused")
            continue
        canonical = query.isascii() and not query.rstrip(_CANONICAL_QUERY)
        kinds.add("shortcut" if canonical else "parsed")
    assert kinds == {"shortcut", "parsed", "refused"}


def _signing(calls: list[str]) -> httpx.Auth:
    class Signing(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
            calls.append("signed")
            request.url = with_query(request.url, "timestamp=1&signature=abc")
            request.headers["X-MBX-APIKEY"] = "key"
            yield request

    return Signing()


async def test_fetch_sends_what_request_would_send() -> None:
    """The client's headers and timeouts, the auth's signature, the body; the answer read."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    calls: list[str] = []
    async with _client(httpx.MockTransport(answer)) as client:
        assert isinstance(client, ExchangeClient)
        url = client.build_request("GET", RESTRICTIONS_PATH).url
        fetched = await client.fetch("GET", url, auth=_signing(calls))
        requested = await client.request("GET", RESTRICTIONS_PATH, auth=_signing(calls))
    assert calls == ["signed", "signed"]
    assert fetched.json() == requested.json() == {"ok": True}
    assert fetched.request is seen[0]
    first, second = seen
    assert (
        str(first.url) == str(second.url) == f"{BASE}{RESTRICTIONS_PATH}?timestamp=1&signature=abc"
    )
    assert first.headers.multi_items() == second.headers.multi_items()
    assert first.headers.raw == second.headers.raw  # the order and spelling on the wire too
    assert first.headers["User-Agent"] == "keymon"
    assert first.extensions["timeout"] == second.extensions["timeout"]
    assert first.content == second.content == b""
    assert isinstance(first.stream, httpx.ByteStream)
    assert isinstance(second.stream, httpx.ByteStream)
    assert list(first.stream) == list(second.stream) == [b""]


async def test_fetch_goes_through_the_read_only_guard() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    async with _client(httpx.MockTransport(answer)) as client:
        assert isinstance(client, ExchangeClient)
        with pytest.raises(ForbiddenRequest, match="not on the read-only allowlist"):
            await client.fetch("POST", httpx.URL(f"{BASE}{RESTRICTIONS_PATH}"))
        with pytest.raises(ForbiddenRequest):
            await client.fetch("GET", httpx.URL(f"{BASE}/sapi/v1/capital/withdraw/apply"))
    assert sent == []


async def test_fetch_follows_no_redirect_and_refuses_once_closed() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": f"{BASE}{TIME_PATH}"})

    client = _client(httpx.MockTransport(answer))
    assert isinstance(client, ExchangeClient)
    url = httpx.URL(f"{BASE}{RESTRICTIONS_PATH}")
    response = await client.fetch("GET", url)
    assert response.status_code == 302
    assert response.request.url == url
    await client.aclose()
    with pytest.raises(RuntimeError, match="client has been closed"):
        await client.fetch("GET", url)


async def test_fetch_hands_the_answer_to_an_auth_flow_of_two_rounds() -> None:
    """An auth that needs the first answer (a challenge) gets it, read, and its next request
    goes out the same way; the last answer is the one returned."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-Try", ""))
        status = 401 if len(seen) == 1 else 200
        return httpx.Response(status, json={"round": len(seen)})

    class Challenge(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
            request.headers["X-Try"] = "1"
            first = yield request
            assert first.json() == {"round": 1}
            request.headers["X-Try"] = "2"
            yield request

    async with _client(httpx.MockTransport(answer)) as client:
        assert isinstance(client, ExchangeClient)
        response = await client.fetch("GET", httpx.URL(f"{BASE}{TIME_PATH}"), auth=Challenge())
    assert seen == ["1", "2"]
    assert (response.status_code, response.json()) == (200, {"round": 2})


@pytest.mark.parametrize(
    ("headers", "wire"),
    [
        ([(b"Content-Type", b"application/json"), (b"Content-Length", b"11")], b'{"ok": true}'),
        ([(b"Content-Type", b"application/json")], b""),
        (
            [(b"Content-Type", b"application/json"), (b"Content-Encoding", b"gzip")],
            gzip.compress(b'{"ok": true}'),
        ),
    ],
    ids=["plain", "empty", "gzip"],
)
def test_an_answer_read_in_memory_is_what_httpx_makes_of_it(
    headers: list[tuple[bytes, bytes]], wire: bytes
) -> None:
    """read_response (the default transport's answers) against httpx.Response(content=...):
    the same body, decoded, and the same state for every reader of it."""
    request = httpx.Request("GET", f"{BASE}{TIME_PATH}")
    extensions = {"http_version": b"HTTP/1.1", "reason_phrase": b"OK"}
    ours = read_response(200, headers, wire, request, dict(extensions))
    httpx_own = httpx.Response(
        200, headers=headers, content=wire, request=request, extensions=extensions
    )
    for response in (ours, httpx_own):
        assert response.is_stream_consumed
        assert response.is_closed
    assert ours.content == httpx_own.content == (b'{"ok": true}' if wire else b"")
    assert ours.text == httpx_own.text
    assert ours.num_bytes_downloaded == httpx_own.num_bytes_downloaded
    assert ours.headers.get("Content-Encoding") == httpx_own.headers.get("Content-Encoding")
    assert (ours.http_version, ours.reason_phrase) == ("HTTP/1.1", "OK")
    assert ours.request is request
    assert b"".join(ours.iter_bytes()) == ours.content


def _tls_of(client: httpx.AsyncClient) -> ssl.SSLContext:
    guard = getattr(client, "_transport")  # noqa: B009 - the transport build_client made
    context = getattr(guard, "_inner").ssl_context  # noqa: B009
    assert isinstance(context, ssl.SSLContext)
    return context


def _default_client(exchange: str, base_url: str) -> httpx.AsyncClient:
    return build_client(exchange=exchange, base_url=base_url, allowlist=frozenset(), timeout=5.0)


def test_every_https_client_checks_certificates_with_one_shared_bundle() -> None:
    """The CA bundle is loaded once per process, not once per exchange, and the context
    verifies both the chain and the host name."""
    binance = _tls_of(_default_client("binance", "https://api.binance.com"))
    okx = _tls_of(_default_client("okx", "https://www.okx.com"))
    assert binance is okx is tls_context()
    assert binance.verify_mode is ssl.CERT_REQUIRED
    assert binance.check_hostname
    assert binance.cert_store_stats()["x509_ca"] > 50  # certifi's bundle


def test_a_plain_http_client_trusts_no_certificate() -> None:
    """A plain-HTTP base URL (a simulator) gets no CA bundle; its context still requires a
    verified certificate, so it could never accept one unchecked."""
    context = _tls_of(_default_client("binance", "http://127.0.0.1:8080"))
    assert context is not tls_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0
    assert context.get_ca_certs() == []

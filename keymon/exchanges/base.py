"""The exchange seam: what an adapter is, and the HTTP plumbing every adapter shares.

An adapter turns one signed, read-only call on the exchange's own API into
:class:`~keymon.model.KeyFacts` for the key that signs it. It raises only
:class:`~keymon.errors.ExchangeError` subclasses: httpx errors are translated here, at the
boundary, and never escape.

Adapters are handed their :class:`httpx.AsyncClient` and never build one, so tests inject a
simulator transport through the same constructor production uses. The client's transport is
wrapped in :class:`ReadOnlyTransport`, which refuses any request that is not on the adapter's
read-only allowlist *before a byte leaves the process*, whoever built the request.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import functools
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import aiohttp
import httpx
import yarl
from aiohttp.http_exceptions import HttpProcessingError
from httpx_aiohttp import AiohttpTransport

from keymon.config_base import ExchangeSettingsBase, KeyBase
from keymon.errors import ExchangeError, ExchangeUnavailable, ForbiddenRequest
from keymon.model import Coverage, KeyFacts, Reason

Clock = Callable[[], float]
#: Called after every response: (exchange, endpoint, status or error reason, seconds).
RequestObserver = Callable[[str, str, str, float], None]


class RequestGate:
    """Hooks around every exchange request; the weight budget implements these.

    The default lets everything through (tests of a single adapter); ``keymon run`` and
    ``keymon check`` both pass every request through :class:`~keymon.budget.WeightBudget`.
    """

    async def acquire(self, exchange: str, weight: int) -> None:
        """Wait until ``weight`` may be spent; raise ExchangeRateLimited while banned."""

    def observe(self, exchange: str, response: httpx.Response) -> None:
        """Learn from a response (used-weight headers, 429/418 with Retry-After)."""

    #: True where an audit's optional reads (its *extras*, such as Binance's trading status)
    #: are paid only from spare budget (:meth:`extras`; the daemon); False where they are part
    #: of the audit's grant (``keymon check``, which the user asked for).
    spare_extras: bool = False

    @contextlib.asynccontextmanager
    async def audit_scope(self, exchange: str, weight: int) -> AsyncIterator[None]:
        """Around one audit that needs ``weight`` over several requests: the budget grants it
        all at once, so an audit never gets its first request and starves on its second."""
        yield

    @contextlib.asynccontextmanager
    async def extras(
        self, exchange: str, weight: int, key: str | None = None
    ) -> AsyncIterator[bool]:
        """Around an audit's optional reads of ``weight`` for ``key``: yields True to send
        them, False to skip them (never waits). The default sends them, paid like any other
        request."""
        yield True


class ExchangeAdapter(Protocol):
    """What keymon needs from an exchange. Adapters are built by the Auditor as
    ``cls(client, settings, clock=, monotonic=, gate=, observer=)``."""

    name: ClassVar[str]
    coverage: ClassVar[Coverage]
    #: The exchange's ``exchanges.<name>:`` section, and the model of its keys (``keys[]``
    #: with ``exchange: <name>``): :mod:`keymon.config` collects both from the registry.
    settings_model: ClassVar[type[ExchangeSettingsBase]]
    key_model: ClassVar[type[KeyBase]]
    #: (METHOD, path) pairs this adapter may call; everything else is refused unsent.
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]]
    #: Used-weight response headers -> the exchange's per-IP limit behind each (for the budget).
    ip_limit_headers: ClassVar[Mapping[str, int]]
    #: The weight of one audit's mandatory requests (the key's own restrictions), granted at
    #: once when above 1 (RequestGate.audit_scope).
    audit_weight: int
    #: The weight of one audit's optional reads (Binance's trading status; 0: none), paid
    #: from spare budget in the daemon (RequestGate.extras).
    extras_weight: int

    @classmethod
    def audit_weight_for(cls, settings: Any) -> int:
        """The mandatory weight of one audit under the exchange's settings (``audit_weight``)."""
        ...

    @classmethod
    def extras_weight_for(cls, settings: Any) -> int:
        """The optional reads' weight under the exchange's settings (``extras_weight``)."""
        ...

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: Any,
        *,
        clock: Clock = ...,
        monotonic: Clock = ...,
        gate: RequestGate | None = ...,
        observer: RequestObserver | None = ...,
    ) -> None: ...

    async def audit(self, key: Any) -> KeyFacts:
        """Return the facts the exchange shows about ``key``, the key that signs the call."""
        ...

    @property
    def weight_used(self) -> int | None:
        """The last request weight the exchange reported for this IP, if it reports one."""
        ...


class ReadOnlyTransport(httpx.AsyncBaseTransport):
    """Refuses every request off the allowlist (method, host and path) before it is sent."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        base_url: str,
        allowlist: frozenset[tuple[str, str]],
        exchange: str,
    ) -> None:
        self._inner = inner
        self._origin = httpx.URL(base_url)
        self._allowlist = allowlist
        self._exchange = exchange

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        same_origin = (url.scheme, url.host, url.port) == (
            self._origin.scheme,
            self._origin.host,
            self._origin.port,
        )
        if not same_origin or (request.method, url.path) not in self._allowlist:
            raise ForbiddenRequest(
                f"{self._exchange}: refused {request.method} {url.scheme}://{url.host}{url.path}:"
                " not on the read-only allowlist"
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _as_httpx_error(exc: BaseException) -> httpx.TransportError | None:
    """The httpx error httpx's own transport would raise for an aiohttp failure, or None.

    httpx-aiohttp 0.2.0 maps every ``aiohttp.ClientConnectionError`` (a refused connection, a
    server that hung up) to ``httpx.ConnectTimeout``, which would read as reason ``timeout``,
    and lets a malformed response escape as aiohttp's own exception; this puts each failure
    where httpx puts it, so :func:`translate_transport_error` keeps its reasons.
    """
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) else None
    original = cause if cause is not None else exc
    message = str(original) or type(original).__name__
    if isinstance(original, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return httpx.ProxyError(message)
    if isinstance(original, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(original, TimeoutError):  # aiohttp's socket and total timeouts
        return httpx.ReadTimeout(message)
    if isinstance(original, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(original, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
        return httpx.ReadError(message)
    if isinstance(original, HttpProcessingError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, httpx.TransportError):
        return exc
    if isinstance(original, aiohttp.ClientError):
        return httpx.TransportError(message)
    return None


class _MappedStream(httpx.AsyncByteStream):
    """A response body whose read errors are mapped like the request's."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            mapped = _as_httpx_error(exc)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class _AiohttpTransport(AiohttpTransport):
    """httpx's API on an aiohttp session (httpx-aiohttp), with httpx's error classes.

    A request with its body in memory (every adapter's) is sent as httpx-aiohttp sends it,
    and its answer is read whole inside the transport (:meth:`_send_read`): httpx reads every
    answer whole anyway (keymon never streams one), and this spares two layers of async
    iterators per response. Anything else (a streamed body, a proxy) takes httpx-aiohttp's
    own path.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            if self.proxy is None and isinstance(request.stream, httpx.ByteStream):
                return await self._send_read(request)
            response = await super().handle_async_request(request)
        except Exception as exc:
            mapped = _as_httpx_error(exc)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _MappedStream(response.stream)
        return response

    async def _send_read(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (body in memory) and read the answer whole; aiohttp's errors are
        left for :meth:`handle_async_request` to map."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        timeout = request.extensions.get("timeout", {})
        async with self.client.request(
            method=request.method,
            # httpx's URL is already in its encoded, validated form: aiohttp takes it as is.
            url=yarl.URL(str(request.url), encoded=True),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            data=request.content or None,
            allow_redirects=False,
            auto_decompress=False,
            compress=False,
            timeout=aiohttp.ClientTimeout(
                sock_connect=timeout.get("connect"),
                sock_read=timeout.get("read"),
                connect=timeout.get("pool"),
            ),
            server_hostname=request.extensions.get("sni_hostname"),
        ) as answer:
            body = await answer.read()
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if answer.reason:
            extensions["reason_phrase"] = answer.reason.encode()
        return read_response(answer.status, answer.raw_headers, body, request, extensions)


def read_response(
    status: int,
    headers: Any,
    body: bytes,
    request: httpx.Request,
    extensions: dict[str, Any],
) -> httpx.Response:
    """An :class:`httpx.Response` for an answer whose whole ``body`` is in memory, read.

    ``httpx.Response(content=body)`` reads its own body through httpx's streaming layers (a
    decoder, a chunker and three generators), a sixth of the transport's CPU per call. A body
    without ``Content-Encoding`` comes out of them unchanged, so the response is given it as
    read, in the state httpx's own ``read()`` leaves (content set, stream consumed, closed). A
    compressed body (keymon asks for gzip, as httpx does) takes httpx's own path, which decodes
    it. ``tests/exchanges/test_client.py`` checks both agree with httpx on what a caller sees.
    """
    response = httpx.Response(
        status,
        headers=headers,
        stream=httpx.ByteStream(body),
        request=request,
        extensions=extensions,
    )
    if "content-encoding" in response.headers:
        return httpx.Response(
            status, headers=headers, content=body, request=request, extensions=extensions
        )
    response._content = body
    response.is_stream_consumed = True
    response.is_closed = True
    return response


class _NoCookies(httpx.Cookies):
    """A cookie store that keeps nothing (:class:`ExchangeClient`)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep no cookie from ``response``."""

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        raise TypeError("keymon's exchange clients keep no cookies")


class ExchangeClient(httpx.AsyncClient):
    """httpx's client as keymon's adapters use it: no cookie store, and :meth:`fetch`.

    httpx copies every response into :mod:`http.cookiejar`'s request and message types to look
    for ``Set-Cookie`` (a URL parse and an e-mail header parse per response), which was several
    per cent of an audit's CPU. No exchange API keymon calls works by cookies, and the aiohttp
    session under the default transport keeps its own cookie jar as before.
    """

    _no_cookies: httpx.Cookies = _NoCookies()

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._guarded = transport

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("keymon's exchange clients keep no cookies")

    async def fetch(
        self,
        method: str,
        url: httpx.URL,
        *,
        auth: httpx.Auth | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """What ``request(...)`` does for an adapter's call, in one step, the answer read whole.

        The request is what httpx's :meth:`build_request` makes of the call (the client's
        headers and timeouts; the common shapes are built directly, see below), signed by
        ``auth``'s flow and sent through this client's own transport, the
        read-only guard. What ``send`` adds per call is left out because keymon's clients use
        none of it: redirects (``follow_redirects`` is off), cookies, event hooks, ``elapsed``,
        per-URL transport mounts, and httpx's "HTTP Request:" log line (which would quote the
        URL with its signed query; keymon's logging drops httpx's info lines anyway). Those
        layers are async wrappers per request: in a loop of 3,000 signed Binance calls through
        this client they cost 0.16 ms a call, 13 % of its CPU (docs/performance.md).
        """
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        plain = params is None and data is None and headers is None and not url.is_relative_url
        if plain and content is None and method == "GET":
            # What build_request makes of a GET with no body (tests/exchanges/test_client.py):
            # httpx's own headers for it (Host first, then the client's), given whole as a
            # request with a stream, which httpx takes as it is (no second header copy, no
            # body encoding, no Content-Length, as for a GET it adds none).
            request = httpx.Request(
                method,
                url,
                headers=[(b"Host", url.netloc), *self.headers.raw],
                stream=_NO_BODY,
                extensions={"timeout": self.timeout.as_dict()},
            )
            request.read()
        elif plain:
            # What build_request makes of this call, without its merge steps, each of which
            # copies the client's headers again.
            request = httpx.Request(
                method,
                url,
                headers=self.headers,
                content=content,
                extensions={"timeout": self.timeout.as_dict()},
            )
        else:
            request = self.build_request(
                method, url, params=params, content=content, data=data, headers=headers
            )
        flow = (auth or _UNSIGNED).auth_flow(request)
        request = next(flow)
        while True:
            response = await self._guarded.handle_async_request(request)
            response.request = request
            try:
                await response.aread()
                # An auth flow that needs a second round (none of keymon's so far) gets the
                # answer, as under send(); its next request goes out the same way.
                request = flow.send(response)
            except StopIteration:
                return response
            finally:
                await response.aclose()


_UNSIGNED = httpx.Auth()
#: The body of a request without one (a ByteStream holds no state: it yields its bytes anew).
_NO_BODY = httpx.ByteStream(b"")


def with_query(url: httpx.URL, query: str) -> httpx.URL:
    """``url`` with its query replaced by ``query``: ``url.copy_with(query=...)``, re-parsed
    only when it would change anything.

    httpx re-parses and re-validates every component of the URL, one character at a time in
    Python, to replace a query. A signed query keymon builds is already in httpx's canonical
    form (unreserved characters and delimiters, no ``%``): then httpx's parser would return it
    unchanged, and the parsed URL is copied with only the query replaced. Anything else (a
    ``%``, a space, a non-ASCII character) takes httpx's own path.
    tests/exchanges/test_client.py checks that the two agree.
    """
    reference = getattr(url, "_uri_reference", None)
    if reference is not None and query.isascii() and not query.rstrip(_CANONICAL_QUERY):
        copied = httpx.URL(url)  # shares the parsed reference; nothing is parsed
        copied._uri_reference = reference._replace(query=query)
        return copied
    return url.copy_with(query=query.encode())


#: What httpx's query quoting leaves as it is (RFC 3986 unreserved characters and the
#: delimiters it allows in a query), without ``%``: its escapes are checked by httpx itself.
_CANONICAL_QUERY = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:/?[]@"
)


def build_client(
    *,
    exchange: str,
    base_url: str,
    allowlist: frozenset[tuple[str, str]],
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An httpx client for one exchange, guarded by its read-only allowlist.

    The default transport sends through aiohttp (httpx-aiohttp): under keymon's concurrency
    httpx's own transport (httpcore) costs several times the CPU per request (see
    ``bench/``). Its aiohttp session is created on the first request, inside the running loop.
    """
    if transport is None:
        tls = tls_context() if httpx.URL(base_url).scheme == "https" else no_tls_context()
        transport = _AiohttpTransport(verify=tls, trust_env=False)
    guarded = ReadOnlyTransport(
        transport, base_url=base_url, allowlist=allowlist, exchange=exchange
    )
    return ExchangeClient(
        base_url=base_url,
        transport=guarded,
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": "keymon"},
        follow_redirects=False,
        trust_env=False,
    )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context of every exchange client in this process: certifi's CA bundle, as
    httpx makes it (``trust_env`` off, so ``SSL_CERT_FILE`` is not read), with certificate
    and host name checks on.

    Loading the bundle costs 20 to 40 ms of CPU; httpx-aiohttp would load it again for every
    client, once per configured exchange. A context holds no per-connection state.
    """
    return httpx.create_ssl_context(trust_env=False)


def no_tls_context() -> ssl.SSLContext:
    """The context of a client whose base URL is plain ``http`` (a simulator, a test): it
    trusts no certificate, so a TLS handshake through it would fail verification rather than
    succeed unchecked. The read-only guard keeps such a client on its own plain-HTTP origin,
    where it is never used; it only spares the CA bundle's load."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def translate_transport_error(
    exc: httpx.HTTPError,
    exchange: str,
    endpoint: str,
    *,
    origin: str | None = None,
    timeout: httpx.Timeout | None = None,
) -> ExchangeError:
    """Map an httpx error (no response) onto keymon's reasons: ``timeout`` for timeouts,
    ``network`` for the rest. The message says which kind of failure and where, e.g.
    ``binance: /api/v3/time: connect refused to 127.0.0.1:1 (ConnectError)``; it never quotes
    the URL (its query can carry a key or a signature)."""
    detail = describe_transport_error(exc, origin or exchange, timeout)
    return ExchangeUnavailable(
        f"{exchange}: {endpoint}: {detail} ({type(exc).__name__})",
        exchange=exchange,
        reason=Reason.TIMEOUT if isinstance(exc, httpx.TimeoutException) else Reason.NETWORK,
    )


def origin_of(url: httpx.URL) -> str | None:
    """``host:port`` of a base URL (the scheme's default port if none is given)."""
    if not url.host:
        return None
    port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{port}" if port else host


_REFUSED = frozenset({errno.ECONNREFUSED})
_RESET = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


def describe_transport_error(
    exc: BaseException, origin: str, timeout: httpx.Timeout | None = None
) -> str:
    """The kind of a failure without a response, and where, for people and logs.

    Kinds: ``dns: cannot resolve``, ``connect refused to``, ``tls: ...``, ``connect timeout
    to``, ``read timeout from``, ``connection reset by``, ``connection closed by``, ``proxy:``,
    ``connect failed to``. The cause is read from the underlying aiohttp or OS error the
    transport chained (``socket.gaierror``, ``errno``, ``ssl.SSLError``); a transport that
    chains none (tests' in-process transports) is described by httpx's class alone.
    """
    causes = _causes(exc)

    def first(*types: type[BaseException]) -> BaseException | None:
        return next((c for c in causes if isinstance(c, types)), None)

    def underlying(kind: type[BaseException]) -> BaseException | None:
        # aiohttp's own errors subclass ssl.SSLError and kin without their fields.
        return next(
            (c for c in causes if isinstance(c, kind) and not isinstance(c, aiohttp.ClientError)),
            None,
        )

    def with_errno(codes: frozenset[int]) -> OSError | None:
        return next(
            (c for c in causes if isinstance(c, OSError) and c.errno in codes),
            None,
        )

    if first(aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError, httpx.ProxyError):
        return f"proxy: cannot reach {origin} through the proxy"
    dns = first(socket.gaierror, aiohttp.ClientConnectorDNSError)
    if dns is not None:
        reason = _strerror(underlying(socket.gaierror))
        return f"dns: cannot resolve {origin}" + (f": {reason}" if reason else "")
    certificate = underlying(ssl.SSLCertVerificationError)
    if isinstance(certificate, ssl.SSLCertVerificationError) or first(
        aiohttp.ClientConnectorCertificateError
    ):
        why = getattr(certificate, "verify_message", None) or "not trusted"
        return f"tls: certificate of {origin} not accepted: {why}"
    if first(ssl.SSLError, aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch):
        tls = underlying(ssl.SSLError)
        why = str(getattr(tls, "reason", None) or "").lower().replace("_", " ")
        return f"tls: handshake with {origin} failed" + (f": {why}" if why else "")
    connect_s = _seconds(timeout.connect if timeout else None)
    read_s = _seconds(timeout.read if timeout else None)
    if first(aiohttp.ConnectionTimeoutError):
        return f"connect timeout to {origin}{connect_s}"
    if first(aiohttp.SocketTimeoutError):
        return f"read timeout from {origin}{read_s}"
    if isinstance(exc, httpx.TimeoutException):
        if isinstance(exc, httpx.ConnectTimeout):
            return f"connect timeout to {origin}{connect_s}"
        if isinstance(exc, httpx.WriteTimeout):
            return f"write timeout to {origin}"
        if isinstance(exc, httpx.PoolTimeout):
            return f"timeout waiting for a connection to {origin}"
        return f"read timeout from {origin}{read_s}"
    if with_errno(_REFUSED) is not None:
        return f"connect refused to {origin}"
    if with_errno(_RESET) is not None:
        return f"connection reset by {origin}"
    if first(aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError):
        return f"connection closed by {origin} before the response was complete"
    if first(HttpProcessingError) or isinstance(exc, httpx.ProtocolError):
        return f"invalid HTTP response from {origin}"
    os_error = next((c for c in causes if isinstance(c, OSError) and c.strerror), None)
    if first(aiohttp.ClientConnectorError) or isinstance(exc, httpx.ConnectError):
        reason = _strerror(os_error)
        return f"connect failed to {origin}" + (f": {reason}" if reason else "")
    if os_error is not None:
        return f"network error with {origin}: {_strerror(os_error)}"
    if isinstance(exc, httpx.ReadError):
        return f"read failed from {origin}"
    if isinstance(exc, httpx.WriteError):
        return f"write failed to {origin}"
    return f"request to {origin} failed"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything behind it: ``__cause__``/``__context__``, and aiohttp's
    ``os_error`` and ``certificate_error``."""
    found: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(found) < 16:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        for attribute in ("os_error", "certificate_error", "__cause__", "__context__"):
            nested = getattr(current, attribute, None)
            if isinstance(nested, BaseException):
                pending.append(nested)
    return found


def _strerror(error: BaseException | None) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return ""


def _seconds(value: float | None) -> str:
    return f" after {value:g} s" if value else ""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = time.time() if now is None else now
    return max(0.0, when.timestamp() - reference)


def utc_from_ms(value: int | float) -> datetime:
    """A UTC datetime from Unix epoch milliseconds."""
    return datetime.fromtimestamp(value / 1000, tz=UTC)

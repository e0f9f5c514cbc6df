"""Drive an adapter through the Auditor against answers quoted from an exchange's own sources.

Each conformance record (``tests/conformance/test_<exchange>.py``) holds the official example
answers of every endpoint keymon calls and the official error entries, each with its source;
this module only serves them, in one of two styles: a transport that answers each path with
one status and body (the body as quoted, text or JSON) and :func:`audit`, or a handler of
ready responses by path (:func:`routes`, :func:`respond`) and :func:`audit_routed`. Both audit
one key through the same Auditor production uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from keymon.audit import Auditor
from keymon.config import Settings
from keymon.model import AuditResult, Reason
from tests.conftest import FakeClock

Handler = Callable[[httpx.Request], httpx.Response]

#: One answer: HTTP status and body (a quoted JSON text, raw bytes, or an object to encode).
Canned = tuple[int, Any]


def body_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def answering(
    routes: Mapping[str, Canned],
    seen: list[httpx.Request] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.MockTransport:
    """A transport answering each path from ``routes``; any other path is a 404."""

    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        canned = routes.get(request.url.path)
        if canned is None:
            return httpx.Response(404, content=b"not found")
        status, body = canned
        return httpx.Response(status, content=body_bytes(body), headers=dict(headers or {}))

    return httpx.MockTransport(handle)


async def audit(
    exchange: str,
    transport: httpx.AsyncBaseTransport,
    *,
    api_key: str = "conformanceKey0001",
    api_secret: str = "conformanceSecret0001",
    clock: Callable[[], float] | None = None,
    **extra: Any,
) -> AuditResult:
    """Audit one key of ``exchange`` through ``transport`` (the exchange's base_url is fake)."""
    key = {
        "name": "conformance",
        "client": "acme",
        "exchange": exchange,
        "api_key": api_key,
        "api_secret": api_secret,
        **extra,
    }
    settings = Settings(
        keys=[key],
        exchanges={exchange: {"base_url": f"https://{exchange}.test"}},
        trusted_ips=["127.0.0.1/32"],
    )
    return await _audit_first(settings, transport, clock or FakeClock())


# ----------------------------------------------------------------------------- by route


def respond(status: int, body: object, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """An HTTP answer with a JSON body (``bytes`` are sent as they are)."""
    return httpx.Response(
        status,
        content=body_bytes(body if isinstance(body, bytes) else json.dumps(body)),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def routes(
    table: Mapping[str, httpx.Response | Callable[[httpx.Request], httpx.Response]],
) -> Handler:
    """A handler answering by URL path; anything else is a 404 the adapter must not call."""

    def handler(request: httpx.Request) -> httpx.Response:
        entry = table.get(request.url.path)
        if entry is None:
            return httpx.Response(404, text=f"not in the conformance record: {request.url.path}")
        return entry(request) if callable(entry) else entry

    return handler


async def audit_routed(key: Mapping[str, Any], handler: Handler, **settings: Any) -> AuditResult:
    """Audit one key (``name``/``client`` filled in) through ``handler``, on the real clock."""
    s = Settings(
        keys=[{"name": "k", "client": "acme", **key}],
        trusted_ips=["127.0.0.1/32"],
        **settings,
    )
    return await _audit_first(s, httpx.MockTransport(handler), None)


async def _audit_first(
    settings: Settings, transport: httpx.AsyncBaseTransport, clock: Callable[[], float] | None
) -> AuditResult:
    """The first configured key, audited once by the Auditor production uses."""
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    async with Auditor(settings, transport_factory=lambda _name: transport, **options) as auditor:
        return await auditor.audit(settings.keys[0])


def reason(result: AuditResult) -> Reason | None:
    return result.error.reason if result.error is not None else None

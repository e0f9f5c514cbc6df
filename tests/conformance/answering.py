"""Drive an adapter through the Auditor against answers quoted from an exchange's own sources.

Each conformance record (``tests/conformance/test_<exchange>.py``) holds the official example
answers of every endpoint keymon calls and the official error entries, each with its source;
this module only serves them: a transport that answers each path with one status and body
(the body as quoted, text or JSON), and an audit of one key through the same Auditor
production uses.
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
    async with Auditor(
        settings, transport_factory=lambda _name: transport, clock=clock or FakeClock()
    ) as auditor:
        return await auditor.audit(settings.keys[0])


def reason(result: AuditResult) -> Reason | None:
    return result.error.reason if result.error is not None else None

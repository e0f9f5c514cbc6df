"""Drive one adapter, through the real Auditor, against canned answers (official bodies)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from keymon.audit import Auditor
from keymon.config import Settings
from keymon.model import AuditResult

Handler = Callable[[httpx.Request], httpx.Response]


def respond(status: int, body: object, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """An HTTP answer with a JSON body (``bytes`` are sent as they are)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(
        status, content=content, headers={"Content-Type": "application/json", **(headers or {})}
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


async def audit(key: Mapping[str, Any], handler: Handler, **settings: Any) -> AuditResult:
    """Audit one key (``name``/``client`` filled in) through ``handler``."""
    s = Settings(
        keys=[{"name": "k", "client": "acme", **key}],
        trusted_ips=["127.0.0.1/32"],
        **settings,
    )
    transport = httpx.MockTransport(handler)
    async with Auditor(s, transport_factory=lambda _n: transport) as auditor:
        return await auditor.audit(s.keys[0])

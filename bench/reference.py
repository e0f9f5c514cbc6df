"""The reference client: the least code that does what ``keymon check`` does on the wire.

One :class:`aiohttp.ClientSession`, HMAC-SHA256 signing by hand, and the same requests keymon
sends: ``GET /sapi/v1/account/apiRestrictions?recvWindow=...&timestamp=...&signature=...``
with ``X-MBX-APIKEY``, one per key, at most ``--concurrency`` at once (the benchmark passes
:data:`keymon.audit.DEFAULT_CONCURRENCY`), each answer read and parsed as JSON. No
configuration, no policy, no logging: what it costs is the floor an HTTP client in Python pays
for these requests, to set keymon's figure beside.

It imports nothing from keymon, so its start-up cost is aiohttp's alone. Run as
``python -m bench.reference --base-url URL --keys FILE --concurrency N``; it prints one JSON
object (requests, answers 200 with the expected body, seconds) and exits 0 when every answer
was right.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from yarl import URL

PATH = "/sapi/v1/account/apiRestrictions"


async def audit_all(
    base_url: str, api_keys: Sequence[str], secret: str, *, concurrency: int, recv_window: int
) -> int:
    """Send one signed apiRestrictions request per key; how many came back right."""
    slots = asyncio.Semaphore(concurrency)
    secret_bytes = secret.encode()

    async def one(session: aiohttp.ClientSession, api_key: str) -> bool:
        async with slots:
            query = f"recvWindow={recv_window}&timestamp={int(time.time() * 1000)}"
            signature = hmac.new(secret_bytes, query.encode(), hashlib.sha256).hexdigest()
            url = URL(f"{base_url}{PATH}?{query}&signature={signature}", encoded=True)
            async with session.get(url, headers={"X-MBX-APIKEY": api_key}) as response:
                body = await response.read()
            data = json.loads(body)
            return response.status == 200 and isinstance(data, dict) and "ipRestrict" in data

    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(one(session, key) for key in api_keys))
    return sum(results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--keys", type=Path, required=True, help="JSON: {secret, api_keys}")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--recv-window", type=int, default=5000)
    args = parser.parse_args(argv)
    data = json.loads(args.keys.read_text())
    api_keys: list[str] = data["api_keys"]
    started = time.perf_counter()
    ok = asyncio.run(
        audit_all(
            args.base_url.rstrip("/"),
            api_keys,
            data["secret"],
            concurrency=args.concurrency,
            recv_window=args.recv_window,
        )
    )
    seconds = time.perf_counter() - started
    print(json.dumps({"requests": len(api_keys), "ok": ok, "seconds": round(seconds, 3)}))
    return 0 if ok == len(api_keys) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The python-binance reference: what auditing the same keys costs with Binance's popular SDK.

For each key, what a script built on python-binance (https://github.com/sammchardy/python-binance)
does to read what ``keymon check`` reads: an :class:`binance.AsyncClient` for the key,
``get_account_api_permissions()`` (``GET /sapi/v1/account/apiRestrictions``, signed) and, with
``--calls 3`` (the default, as keymon's default ``exchanges.binance.trading_status: true``),
``get_account_api_trading_status()`` (``GET /sapi/v1/account/apiTradingStatus``) and
``get_account_status()`` (``GET /sapi/v1/account/status``); ``--calls 1`` is the first only
(as ``trading_status: false``). Then the client is closed; at most ``--concurrency`` keys at
once (the benchmark passes keymon's per-exchange limit). No configuration, no policy, no
output but a count.

python-binance is **not** a keymon dependency and is not in the locks: this file runs under
an interpreter that has it (a throwaway virtual environment), named by the
``BENCH_PYBINANCE_PYTHON`` environment variable, e.g.::

    python3 -m venv /tmp/pybinance && /tmp/pybinance/bin/pip install python-binance==1.0.37
    BENCH_PYBINANCE_PYTHON=/tmp/pybinance/bin/python scripts/bench --only check

Without it the benchmark skips this comparison and says so. It imports nothing from keymon.
Run as ``python -m bench.pybinance_reference --base-url URL --keys FILE --concurrency N
[--calls 1|3]``;
prints one JSON object (requests, right answers, seconds), exit 0 when every answer was right.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


async def audit_all(
    base_url: str, api_keys: Sequence[str], secret: str, concurrency: int, calls: int = 3
) -> int:
    """One python-binance client per key and ``calls`` calls (apiRestrictions, then the
    trading status and the account status); how many keys got every answer."""
    from binance import AsyncClient  # type: ignore[import-not-found,unused-ignore]

    slots = asyncio.Semaphore(concurrency)

    async def one(api_key: str) -> bool:
        async with slots:
            client: Any = AsyncClient(api_key, secret)
            # The SDK's own attributes for its endpoints (formatted in its constructor).
            client.API_URL = f"{base_url}/api"
            client.MARGIN_API_URL = f"{base_url}/sapi"
            try:
                answer = await client.get_account_api_permissions()
                ok = isinstance(answer, dict) and "ipRestrict" in answer
                if calls == 3:
                    trading = await client.get_account_api_trading_status()
                    status = await client.get_account_status()
                    ok = ok and isinstance(trading, dict) and "data" in trading
                    ok = ok and isinstance(status, dict) and "data" in status
            finally:
                await client.close_connection()
            return ok

    results = await asyncio.gather(*(one(key) for key in api_keys), return_exceptions=True)
    return sum(1 for r in results if r is True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pybinance_reference")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--keys", type=Path, required=True, help="JSON: {secret, api_keys}")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument(
        "--calls",
        type=int,
        choices=(1, 3),
        default=3,
        help="3: restrictions, trading status, account status (keymon's default); 1: the first",
    )
    args = parser.parse_args(argv)
    data = json.loads(args.keys.read_text())
    api_keys: list[str] = data["api_keys"]
    started = time.perf_counter()
    ok = asyncio.run(
        audit_all(args.base_url.rstrip("/"), api_keys, data["secret"], args.concurrency, args.calls)
    )
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "keys": len(api_keys),
                "requests": len(api_keys) * args.calls,
                "ok": ok,
                "seconds": round(seconds, 3),
            }
        )
    )
    return 0 if ok == len(api_keys) else 1


if __name__ == "__main__":
    sys.exit(main())

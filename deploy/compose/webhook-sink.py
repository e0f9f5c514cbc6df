"""A demo notification receiver: prints every alert it is sent, one line each.

It stands in for the ops channel in the compose demo (deploy/compose/compose.yaml) and takes
both of keymon's alert paths:

- ``POST /alertmanager``: Alertmanager's webhook (``{"alerts": [{"status", "labels",
  "annotations"}, ...]}``), printed as ``alertmanager FIRING critical KeymonKeyWithdrawEnabled
  key=bravo-binance: <summary>``;
- ``POST /keymon``: keymon's built-in notifications through Apprise's ``json://`` URL
  (``{"title", "message", "type"}``), printed as ``keymon <type>: <title>``.

Watch it with ``docker compose -f deploy/compose/compose.yaml logs -f webhook-sink``.
Standard library only; for the demo, never for production.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def describe(path: str, body: Any) -> list[str]:
    """The lines printed for one POSTed body."""
    if not isinstance(body, dict):
        return [f"{path}: unexpected body {json.dumps(body)[:200]}"]
    if isinstance(body.get("alerts"), list):
        lines = []
        for alert in body["alerts"]:
            labels = alert.get("labels", {})
            annotations = alert.get("annotations", {})
            key = f" key={labels['key']}" if "key" in labels else ""
            lines.append(
                f"alertmanager {str(alert.get('status', '?')).upper()} "
                f"{labels.get('severity', '-')} {labels.get('alertname', '?')}{key}: "
                f"{annotations.get('summary', '')}"
            )
        return lines
    if "title" in body or "message" in body:
        first = str(body.get("message", "")).splitlines()[:1]
        detail = f" | {first[0]}" if first else ""
        return [f"keymon {body.get('type', 'info')}: {body.get('title', '')}{detail}"]
    return [f"{path}: {json.dumps(body)[:200]}"]


class Handler(BaseHTTPRequestHandler):
    """Accept any POST, print what it says, answer 200."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("utf-8", "replace")
        for line in describe(self.path, body):
            print(line, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        """Health check."""
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the alerts are the output."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container's service
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    # PID 1 in its container: without a handler, SIGTERM would be ignored until SIGKILL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"webhook-sink listening on {args.host}:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

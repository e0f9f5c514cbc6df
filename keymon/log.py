"""Logging: structlog configured once, with a redaction step no secret gets past.

Events are snake_case facts (``audit_completed``, ``key_changed``), rendered as JSON lines by
default or readably on a terminal. :class:`Redactor` runs after every other processor that adds
text (including the traceback renderer) and replaces each configured secret value wherever it
appears, so a secret that slipped into a message, a field or an exception still never reaches
the output.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"
#: Shorter fragments are not redacted on their own: they would mangle ordinary words.
MIN_FRAGMENT = 12
#: Parts of a URL secret (path segments, user, password, query values) this long are hidden.
MIN_URL_FRAGMENT = 10
_URL_PARTS = re.compile(r"[/:@?&=#+,;]+")
#: Needles are indexed by this many leading characters.
_PREFIX = 8


class Redactor:
    """A structlog processor replacing secret values (and long fragments of them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: dict[str, list[str]] = {}
        self._short: list[str] = []

    def update(self, secrets: Iterable[str]) -> None:
        """Replace the set of secrets to hide (at start and on every reload)."""
        needles: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            needles.add(secret)
            # A PEM key may surface one line at a time (a traceback, a wrapped message).
            needles.update(
                line.strip() for line in secret.splitlines() if len(line.strip()) >= MIN_FRAGMENT
            )
            if "://" in secret:
                # A channel URL's tokens may surface alone (a library's log line quoting a
                # path segment or a header): hide every long part of it too.
                needles.update(
                    part for part in _URL_PARTS.split(secret) if len(part) >= MIN_URL_FRAGMENT
                )
        # Thousands of keys mean thousands of needles: index them by their first characters
        # so that a log line is scanned once, not once per secret.
        index: dict[str, list[str]] = {}
        short: list[str] = []
        for needle in needles:
            if len(needle) >= _PREFIX:
                index.setdefault(needle[:_PREFIX], []).append(needle)
            else:
                short.append(needle)
        with self._lock:
            self._index, self._short = index, short

    def redact(self, text: str) -> str:
        """``text`` with every secret (and long fragment of one) replaced."""
        index, short = self._index, self._short
        if not index and not short:
            return text
        found = {needle for needle in short if needle in text}
        if index:
            for start in range(len(text) - _PREFIX + 1):
                candidates = index.get(text[start : start + _PREFIX])
                if candidates:
                    found.update(n for n in candidates if text.startswith(n, start))
        # Longest first, so a fragment never leaves the rest of its secret behind.
        for needle in sorted(found, key=len, reverse=True):
            text = text.replace(needle, REDACTED)
        return text

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        if isinstance(value, BaseException):
            return self.redact(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self._index and not self._short:
            return event_dict
        return {key: self._scrub(value) for key, value in event_dict.items()}


#: The process-wide redactor; ``configure`` installs it, the config loader feeds it.
redactor = Redactor()

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(*, fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for the process: JSON lines, or console output for people."""
    stream = stream or sys.stderr
    renderer: structlog.types.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        # Render tracebacks to text *before* redaction, never inside the renderer after it.
        tracebacks: list[structlog.types.Processor] = [structlog.processors.format_exc_info]
    else:
        renderer = structlog.processors.JSONRenderer()
        # Without frame locals: a local may hold the whole configuration, and rendering
        # thousands of them (cancelled audits at shutdown) would take seconds.
        tracebacks = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Libraries log through the standard library (aiohttp, asyncio):
    # render their records through the same pipeline, redaction included.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tracebacks,
                redactor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries are chatty at info (every job run): only their warnings are worth a line.
    root.setLevel(max(_LEVELS[level], logging.WARNING))
    structlog.configure(
        processors=[
            *shared,
            *tracebacks,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )

"""keymon's exception tree.

::

    KeymonError
    ├── ConfigError                 the configuration is invalid (every problem listed)
    ├── ForbiddenRequest            a request off the adapter's read-only allowlist
    ├── NotifyError                 a notification could not be delivered
    └── ExchangeError(reason)       an audit call failed; ``reason`` is a :class:`Reason`
        ├── ExchangeUnavailable     timeouts, connection errors, 5xx, maintenance
        ├── ExchangeAuthError       the exchange rejects the key (deleted, IP, signature)
        ├── ExchangeClockError      the request's timestamp fell outside the window
        ├── ExchangeRateLimited     429 / 418, carries ``retry_after``
        └── ExchangeBadResponse     a body keymon cannot read

httpx errors are translated at the adapter boundary (``raise ... from exc``); none escapes
an adapter. Messages never carry a secret: they are built from the exchange's code and text,
never from request URLs or headers.
"""

from __future__ import annotations

from keymon.model import AuditError, Reason


class KeymonError(Exception):
    """Base of every error keymon raises on purpose."""


class ConfigError(KeymonError):
    """The configuration is invalid. ``problems`` holds every ``location: message`` line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class ForbiddenRequest(KeymonError):
    """A request that is not on the adapter's read-only allowlist; it was never sent."""


class NotifyError(KeymonError):
    """A notification could not be delivered."""


class ExchangeError(KeymonError):
    """An exchange call failed. Carries the :class:`Reason` and the exchange's own code."""

    reason: Reason = Reason.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        exchange: str,
        reason: Reason | None = None,
        code: int | str | None = None,
        refused_ip: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exchange = exchange
        if reason is not None:
            self.reason = reason
        self.code = code
        self.refused_ip = refused_ip
        self.retry_after = retry_after

    def to_audit_error(self) -> AuditError:
        """The error as data, for an :class:`AuditResult`."""
        return AuditError(
            reason=self.reason,
            message=self.message,
            code=self.code,
            refused_ip=self.refused_ip,
            retry_after=self.retry_after,
        )


class ExchangeUnavailable(ExchangeError):
    """The exchange could not be reached or answered with a server error."""

    reason = Reason.EXCHANGE_UNAVAILABLE


class ExchangeAuthError(ExchangeError):
    """The exchange rejects the key: deleted, wrong secret, or this IP is not whitelisted."""

    reason = Reason.KEY_REJECTED


class ExchangeClockError(ExchangeError):
    """The request's timestamp was outside the exchange's window even after a re-sync."""

    reason = Reason.CLOCK_SKEW


class ExchangeRateLimited(ExchangeError):
    """The exchange refuses calls for a while (429, or a 418 ban)."""

    reason = Reason.RATE_LIMITED


class ExchangeBadResponse(ExchangeError):
    """The exchange answered with something keymon cannot read."""

    reason = Reason.BAD_RESPONSE

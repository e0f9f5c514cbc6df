"""Change detection: which facts of a key differ between two audits.

A pure function of (before, after): every permission, the IP restriction, the visible IP
list, the creation time, the key's own lock, its account kind (master/sub) and third-party
binding, the account's API trading lock and status, each deadline and whether the exchange
rejects the key (not its last use, nor the trading-rule indicators: those change with every
order). Values are
rendered the way an operator reads them (``withdraw: off -> on``); ``field`` doubles as the
``field`` label of ``keymon_key_changes_total``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keymon.model import KeyFacts


@dataclass(frozen=True, slots=True)
class Change:
    """One fact that changed between two audits."""

    field: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.field}: {self.before} -> {self.after}"


def _onoff(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")


def _when(value: datetime | None) -> str:
    return "none" if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def diff_facts(before: KeyFacts, after: KeyFacts) -> list[Change]:
    """The facts that differ between two successful audits, in a stable order."""
    changes: list[Change] = []
    for name in sorted(set(before.permissions) | set(after.permissions)):
        old, new = before.permissions.get(name), after.permissions.get(name)
        if old != new:
            changes.append(Change(name, _onoff(old), _onoff(new)))
    if before.ip_restricted != after.ip_restricted:
        changes.append(
            Change("ip_restricted", _onoff(before.ip_restricted), _onoff(after.ip_restricted))
        )
    if before.ip_list != after.ip_list:
        changes.append(Change("ip_list", _ips(before.ip_list), _ips(after.ip_list)))
    if before.created_at != after.created_at:
        changes.append(Change("created_at", _when(before.created_at), _when(after.created_at)))
    if before.key_locked != after.key_locked:
        changes.append(Change("key_locked", _onoff(before.key_locked), _onoff(after.key_locked)))
    if before.account_kind != after.account_kind:
        changes.append(
            Change(
                "account_kind",
                before.account_kind or "unknown",
                after.account_kind or "unknown",
            )
        )
    if before.third_party_app != after.third_party_app:
        changes.append(
            Change("third_party_app", _onoff(before.third_party_app), _onoff(after.third_party_app))
        )
    # A trading-status read that failed (None after a known value) is not a change: the fact
    # is unknown for this audit, not different.
    if (
        after.trading_locked is not None
        and before.trading_locked is not None
        and before.trading_locked != after.trading_locked
    ):
        changes.append(
            Change("trading_locked", _onoff(before.trading_locked), _onoff(after.trading_locked))
        )
    if (
        after.account_status is not None
        and before.account_status is not None
        and before.account_status != after.account_status
    ):
        changes.append(Change("account_status", before.account_status, after.account_status))
    old_deadlines = {d.kind: d.at for d in before.deadlines}
    new_deadlines = {d.kind: d.at for d in after.deadlines}
    for kind in sorted(set(old_deadlines) | set(new_deadlines)):
        if old_deadlines.get(kind) != new_deadlines.get(kind):
            changes.append(
                Change(
                    f"deadline_{kind}",
                    _when(old_deadlines.get(kind)),
                    _when(new_deadlines.get(kind)),
                )
            )
    return changes


def diff_rejected(before: bool | None, after: bool | None) -> list[Change]:
    """The key starting or ceasing to be rejected by the exchange."""
    if before is None or after is None or before == after:
        return []
    words = {True: "rejected", False: "accepted"}
    return [Change("rejected", words[before], words[after])]


def _ips(value: tuple[str, ...] | None) -> str:
    if value is None:
        return "not visible"
    return ",".join(value) if value else "none"

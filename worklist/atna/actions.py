"""Entries of the worklist's own audit trail (:func:`worklist.context.audit`) that ATNA asks
for, as audit messages: User Authentication for logins and logouts, Security Alert for account
changes. Each is recorded once the transaction that wrote the entry commits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from worklist import atna
from worklist.atna import events

__all__ = ["ACCOUNT_CHANGES", "audit_action"]

#: Actions of the worklist audit trail that change who may use the node, and whether they
#: change roles (Security Roles Changed) or other security attributes.
ACCOUNT_CHANGES: dict[str, bool] = {
    "account-created": True,
    "account-role-changed": True,
    "account-disabled": False,
    "account-enabled": False,
    "account-unlocked": False,
    "password-set": False,
    "token-issued": False,
    "token-revoked": False,
}
_LOGIN, _LOGIN_FAILED, _LOGOUT = "login", "login-failed", "logout"


def audit_action(session: Session, actor: str, action: str, detail: str, source: str) -> None:
    """Record the audit message for a worklist audit-trail entry, if it is one ATNA asks for,
    once ``session`` commits (nothing if it rolls back or no trail is installed)."""
    if atna.installed() is None:
        return
    user = actor.split(":", 1)[-1] or actor
    if action in (_LOGIN, _LOGIN_FAILED, _LOGOUT):
        _after_commit(
            session, events.user_authentication, user=user, client_address=source,
            succeeded=action != _LOGIN_FAILED, logout=action == _LOGOUT,
            reason=detail if action == _LOGIN_FAILED else "",
        )
    elif action in ACCOUNT_CHANGES:
        _after_commit(
            session, events.account_changed, actor=user, account=_account_named(detail),
            change=f"{action}: {detail}" if detail else action,
            roles_changed=ACCOUNT_CHANGES[action], client_address=source,
        )


def _account_named(detail: str) -> str:
    """The account a detail such as ``account NAME role ROLE`` names."""
    words = detail.split()
    if len(words) >= 2 and words[0] == "account":
        return words[1]
    return detail or "unknown"


_PENDING = "atna_pending"


def _after_commit(session: Session, builder: Callable[..., Any], **facts: Any) -> None:
    """Record ``builder(node, **facts)`` when the session's transaction commits; forget it when
    the transaction rolls back."""
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        event.listen(session, "after_commit", _send_pending)
        event.listen(session, "after_rollback", _forget_pending)
    pending.append((builder, facts))


def _send_pending(session: Session) -> None:
    pending = session.info.get(_PENDING) or []
    session.info[_PENDING] = []
    for builder, facts in pending:
        atna.record(builder, **facts)


def _forget_pending(session: Session) -> None:
    session.info[_PENDING] = []

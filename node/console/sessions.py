"""Browser sessions of the console: who is looking, their CSRF token, their login.

Rules:
- A session is a random id (256 bits) in an HttpOnly, SameSite=Strict cookie; everything else
  stays in this process (`SessionStore`, bounded by `sessions_max`, idle sessions expire after
  `idle_timeout_s`). Nothing about a session is ever rendered except its CSRF token and user name.
- Every state-changing request (POST) must carry the session's CSRF token, in the form field
  `csrf_token` or the `X-CSRF-Token` header, compared in constant time; and when the browser
  sends an `Origin`, it must be this console's own. The login form is protected too (a forged
  login would otherwise sign a victim in as the attacker).
- With SASL, the console holds no identity of its own: a person signs in with their cluster user
  and password; the session keeps them in memory only to open that person's SDK clients (the
  cluster checks them and applies that user's ACLs). Logging out or expiring closes the clients
  and drops the password.

The clock is injected so expiry is tested without sleeping.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

SESSION_COOKIE = "strom_console_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSIONS_MAX = 1_000
IDLE_TIMEOUT_S = 30 * 60.0


@dataclass(slots=True)
class Session:
    session_id: str
    csrf_token: str
    last_seen_s: float
    username: str | None = None
    # The person's cluster login, kept only to open their clients; never rendered or logged.
    password: str | None = field(default=None, repr=False)
    # Per-session state owned by the app (the person's cluster clients, lag histories, ...).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def signed_in(self) -> bool:
        return self.username is not None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(
        session.csrf_token.encode(), (presented or "").encode()
    )


def origin_ok(origin: str | None, host: str | None, scheme: str) -> bool:
    """A POST's Origin header (when the browser sends one) must name this console."""
    if origin is None:
        return True
    return bool(host) and origin in (f"{scheme}://{host}",)


class SessionStore:
    """Every live session, by id. `on_close` runs when a session ends (logout, expiry,
    eviction) so the app can close that person's cluster clients."""

    def __init__(
        self,
        on_close: Callable[[Session], Awaitable[None]],
        sessions_max: int = SESSIONS_MAX,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_close = on_close
        self.sessions_max = sessions_max
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    async def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, touched; None when unknown or expired."""
        await self.expire()
        session = self._sessions.get(session_id or "")
        if session is not None:
            session.last_seen_s = self.clock()
        return session

    async def create(self) -> Session:
        await self.expire()
        while len(self._sessions) >= self.sessions_max:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen_s)
            await self.end(oldest)
        session = Session(secrets.token_urlsafe(32), new_token(), self.clock())
        self._sessions[session.session_id] = session
        return session

    async def end(self, session: Session) -> None:
        self._sessions.pop(session.session_id, None)
        try:
            await self.on_close(session)
        finally:
            session.password = None
            session.state.clear()

    async def sign_in(self, session: Session, username: str, password: str) -> Session:
        """A new session (new id, new CSRF token) for the person who just logged in, so an id
        planted before the login is worth nothing after it (session fixation)."""
        await self.end(session)
        fresh = await self.create()
        fresh.username, fresh.password = username, password
        return fresh

    async def expire(self) -> None:
        cutoff = self.clock() - self.idle_timeout_s
        for session in [s for s in self._sessions.values() if s.last_seen_s < cutoff]:
            await self.end(session)

    async def close_all(self) -> None:
        for session in list(self._sessions.values()):
            await self.end(session)

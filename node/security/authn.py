"""Who is calling: the principal of one RPC, from the listener's security protocol.

| listener protocol          | principal                                                     |
|----------------------------|---------------------------------------------------------------|
| SSL with a client cert     | `User:<subject CN>` (gRPC's `x509_common_name` auth property) |
| SSL without one, PLAINTEXT | `User:ANONYMOUS`                                              |
| SASL_PLAINTEXT, SASL_SSL   | `User:<username>` once the SASL/PLAIN metadata is verified    |

On a SASL listener a call without credentials, with an unsupported mechanism or with a wrong
username or password fails with UNAUTHENTICATED; the message never repeats the password, and
does not say whether the user exists. SASL metadata sent to a non-SASL listener is ignored.

A failed login is answered only after `connection.failed.authentication.delay.ms` (Kafka's
knob), counted in `strom_authentication_failures_total{reason}`, and logged with the peer (at
most `FAILURE_LOG_LINES_PER_S_MAX` lines a second; the rest are counted in the next line).
Expensive checks are bounded and scheduled fairly by the credential verifier's login queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from strom.client.acl import ANONYMOUS, PRINCIPAL_TYPE
from strom.client.sasl import (
    MECHANISM_KEY,
    PASSWORD_KEY,
    SUPPORTED_MECHANISMS,
    USERNAME_KEY,
)
from strom.node import metrics

from .credentials import CredentialVerifier
from .login_queue import LoginRefused

log = logging.getLogger("strom.security")

COMMON_NAME_PROPERTY = "x509_common_name"
FAILURE_LOG_LINES_PER_S_MAX = 10
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class AuthenticationError(Exception):
    """The caller could not be authenticated; the message is safe to send back. `reason` labels
    the failure metric: missing, mechanism, credentials or busy."""

    def __init__(self, message: str, reason: str = "credentials") -> None:
        super().__init__(message)
        self.reason = reason


def principal_of(name: str) -> str:
    return f"{PRINCIPAL_TYPE}:{name}"


def certificate_principal(auth_context: Mapping[str, Sequence[bytes]]) -> str | None:
    """`User:<CN>` of the peer's verified certificate, or None when it presented none."""
    names = auth_context.get(COMMON_NAME_PROPERTY) or ()
    for raw in names:
        name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        if name:
            return principal_of(name)
    return None


def sasl_credentials(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> tuple[str, str, str] | None:
    """(mechanism, username, password) from call metadata, or None when no username is sent."""
    found: dict[str, str] = {}
    for key, value in metadata or ():
        if key in (MECHANISM_KEY, USERNAME_KEY, PASSWORD_KEY) and key not in found:
            found[key] = value.decode(errors="replace") if isinstance(value, bytes) else value
    if USERNAME_KEY not in found:
        return None
    return found.get(MECHANISM_KEY, "PLAIN"), found[USERNAME_KEY], found.get(PASSWORD_KEY, "")


class FailureLog:
    """Logs refused logins, at most `lines_per_s_max` lines a second; a line after a quiet spell
    says how many were not logged."""

    def __init__(
        self, lines_per_s_max: int = FAILURE_LOG_LINES_PER_S_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.lines_per_s_max = lines_per_s_max
        self.clock = clock
        self._second = -1
        self._lines = 0
        self.suppressed = 0

    def refused(self, peer: str, listener_protocol: str, reason: str) -> None:
        second = int(self.clock())
        if second != self._second:
            self._second, self._lines = second, 0
        if self._lines >= self.lines_per_s_max:
            self.suppressed += 1
            return
        self._lines += 1
        more = f" ({self.suppressed} more not logged before this)" if self.suppressed else ""
        self.suppressed = 0
        log.warning(
            "failed authentication from %s on a %s listener: %s%s",
            peer or "an unknown peer", listener_protocol, reason, more,
        )  # fmt: skip


class Authenticator:
    """The principal of calls arriving on one listener."""

    def __init__(
        self,
        protocol: str,
        verifier: CredentialVerifier | None,
        failure_delay_s: float = 0.1,
        failure_log: FailureLog | None = None,
    ) -> None:
        self.protocol = protocol
        self.verifier = verifier
        self.failure_delay_s = failure_delay_s
        self.failure_log = failure_log or FailureLog()
        assert protocol not in SASL_PROTOCOLS or verifier is not None

    @property
    def trivial(self) -> bool:
        """Every caller is ANONYMOUS: no authentication to do."""
        return self.protocol == "PLAINTEXT"

    async def principal(
        self,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        auth_context: Mapping[str, Sequence[bytes]],
        peer: str = "",
    ) -> str:
        if self.protocol in SASL_PROTOCOLS:
            try:
                return await self._sasl(metadata, peer)
            except AuthenticationError as exc:
                await self._refused(peer, exc)
                raise
        if self.protocol == "SSL":
            return certificate_principal(auth_context) or ANONYMOUS
        return ANONYMOUS

    async def _refused(self, peer: str, exc: AuthenticationError) -> None:
        metrics.record_authentication_failure(exc.reason)
        self.failure_log.refused(peer, self.protocol, str(exc))
        # Kafka's connection.failed.authentication.delay.ms: a guesser waits for each answer.
        await asyncio.sleep(self.failure_delay_s)

    async def _sasl(self, metadata: Iterable[tuple[str, str | bytes]] | None, peer: str) -> str:
        credentials = sasl_credentials(metadata)
        if credentials is None:
            raise AuthenticationError(
                f"this listener requires SASL authentication ({self.protocol}): set "
                "sasl_username and sasl_password",
                "missing",
            )
        mechanism, username, password = credentials
        if mechanism.upper() not in SUPPORTED_MECHANISMS:
            raise AuthenticationError(
                f"SASL mechanism {mechanism[:32]!r} is not supported; use PLAIN", "mechanism"
            )
        assert self.verifier is not None
        try:
            verified = await self.verifier.verify(username, password, peer)
        except LoginRefused as exc:
            raise AuthenticationError(f"authentication refused: {exc}", "busy") from None
        if not verified:
            # Neither the password nor whether the user exists (nor the username: a password
            # typed into the wrong field must not come back in an error or a log line).
            raise AuthenticationError("authentication failed: wrong username or password")
        return principal_of(username)

"""Who is calling: the principal of one RPC, from the listener's security protocol.

| listener protocol          | principal                                                     |
|----------------------------|---------------------------------------------------------------|
| SSL with a client cert     | `User:<subject CN>` (gRPC's `x509_common_name` auth property) |
| SSL without one, PLAINTEXT | `User:ANONYMOUS`                                              |
| SASL_PLAINTEXT, SASL_SSL   | `User:<username>` once the SASL/PLAIN metadata is verified    |

On a SASL listener a call without credentials, with an unsupported mechanism or with a wrong
username or password fails with UNAUTHENTICATED; the message never repeats the password, and
does not say whether the user exists. SASL metadata sent to a non-SASL listener is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from strom.client.acl import ANONYMOUS, PRINCIPAL_TYPE
from strom.client.sasl import (
    MECHANISM_KEY,
    PASSWORD_KEY,
    SUPPORTED_MECHANISMS,
    USERNAME_KEY,
)

from .credentials import CredentialVerifier

COMMON_NAME_PROPERTY = "x509_common_name"
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class AuthenticationError(Exception):
    """The caller could not be authenticated; the message is safe to send back."""


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


class Authenticator:
    """The principal of calls arriving on one listener."""

    def __init__(self, protocol: str, verifier: CredentialVerifier | None) -> None:
        self.protocol = protocol
        self.verifier = verifier
        assert protocol not in SASL_PROTOCOLS or verifier is not None

    @property
    def trivial(self) -> bool:
        """Every caller is ANONYMOUS: no authentication to do."""
        return self.protocol == "PLAINTEXT"

    async def principal(
        self,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> str:
        if self.protocol in SASL_PROTOCOLS:
            return await self._sasl(metadata)
        if self.protocol == "SSL":
            return certificate_principal(auth_context) or ANONYMOUS
        return ANONYMOUS

    async def _sasl(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        credentials = sasl_credentials(metadata)
        if credentials is None:
            raise AuthenticationError(
                f"this listener requires SASL authentication ({self.protocol}): set "
                "sasl_username and sasl_password"
            )
        mechanism, username, password = credentials
        if mechanism.upper() not in SUPPORTED_MECHANISMS:
            raise AuthenticationError(
                f"SASL mechanism {mechanism[:32]!r} is not supported; use PLAIN"
            )
        assert self.verifier is not None
        if not await self.verifier.verify(username, password):
            # Neither the password nor whether the user exists (nor the username: a password
            # typed into the wrong field must not come back in an error or a log line).
            raise AuthenticationError("authentication failed: wrong username or password")
        return principal_of(username)

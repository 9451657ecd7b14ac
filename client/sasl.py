"""SASL/PLAIN-like authentication over gRPC, and the stored form of a user's password.

Credentials travel as gRPC call metadata on every call (keys below; gRPC metadata keys must be
lower case): `strom-sasl-mechanism: PLAIN`, `strom-sasl-username`, `strom-sasl-password`.
A listener whose security protocol is SASL_PLAINTEXT or SASL_SSL checks them against the
users in the metadata log. SASL_PLAINTEXT sends the password in clear on the wire, as Kafka's
does; use SASL_SSL outside a trusted network.

A stored credential is SCRAM-like: a random salt, scrypt's work factors (n, r, p) and the
derived key `scrypt(password, salt, n, r, p)`. The SDK derives it on the client (as Kafka's
AlterUserScramCredentials does), so a password given to `Admin.create_user` never reaches the
controller, the metadata log or any log file; the broker that checks a login derives the key
again from the password the client sends and compares in constant time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from strom.v1 import metadata_pb2

MECHANISM_KEY = "strom-sasl-mechanism"
USERNAME_KEY = "strom-sasl-username"
PASSWORD_KEY = "strom-sasl-password"
SUPPORTED_MECHANISMS = ("PLAIN",)

# scrypt work factors for new credentials: about 0.1 s and 16 MiB per derivation here, paid
# once per login (the broker caches successes), never per RPC.
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Bounds a stored credential must respect, so that no credential can make a login cost more
# than ~64 MiB and a few seconds of one core.
SCRYPT_N_MIN = 1 << 10
SCRYPT_N_MAX = 1 << 16
SCRYPT_R_MAX = 16
SCRYPT_P_MAX = 4
SCRYPT_MEMORY_BYTES_MAX = 64 * 1024 * 1024
SALT_BYTES_MIN = 16
SALT_BYTES_MAX = 64
USERNAME_LENGTH_MAX = 256
PASSWORD_LENGTH_MAX = 1024


@dataclass(frozen=True, slots=True)
class ScryptCredential:
    """A user's stored credential. `repr` hides the salt and the key."""

    salt: bytes
    n: int
    r: int
    p: int
    hash: bytes

    def __repr__(self) -> str:
        return f"ScryptCredential(n={self.n}, r={self.r}, p={self.p})"

    def problem(self) -> str | None:
        """Why this credential may not be stored, or None."""
        if not SALT_BYTES_MIN <= len(self.salt) <= SALT_BYTES_MAX:
            return f"salt must be {SALT_BYTES_MIN}..{SALT_BYTES_MAX} bytes"
        if self.n & (self.n - 1) or not SCRYPT_N_MIN <= self.n <= SCRYPT_N_MAX:
            return f"n must be a power of two in {SCRYPT_N_MIN}..{SCRYPT_N_MAX}"
        if not 1 <= self.r <= SCRYPT_R_MAX or not 1 <= self.p <= SCRYPT_P_MAX:
            return f"r must be in 1..{SCRYPT_R_MAX} and p in 1..{SCRYPT_P_MAX}"
        if _memory_bytes(self.n, self.r, self.p) > SCRYPT_MEMORY_BYTES_MAX:
            return f"n*r needs more than {SCRYPT_MEMORY_BYTES_MAX} bytes of memory"
        if len(self.hash) != HASH_BYTES:
            return f"hash must be {HASH_BYTES} bytes"
        return None


def _memory_bytes(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2)


def derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """scrypt(password, salt, n, r, p), HASH_BYTES long."""
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=_memory_bytes(n, r, p) + (1 << 20),
        dklen=HASH_BYTES,
    )


def new_credential(
    password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> ScryptCredential:
    """A credential for `password` with a fresh random salt."""
    if not password:
        raise ValueError("the password is empty")
    if len(password) > PASSWORD_LENGTH_MAX:
        raise ValueError(f"the password is longer than {PASSWORD_LENGTH_MAX} characters")
    salt = os.urandom(SALT_BYTES)
    return ScryptCredential(salt, n, r, p, derive(password, salt, n, r, p))


def sasl_metadata(
    username: str, password: str, mechanism: str = "PLAIN"
) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates one call."""
    return ((MECHANISM_KEY, mechanism), (USERNAME_KEY, username), (PASSWORD_KEY, password))


class _SaslCredentials:
    """The call metadata of one login, and how a call's details take it."""

    def __init__(self, username: str, password: str, mechanism: str = "PLAIN") -> None:
        if mechanism.upper() not in SUPPORTED_MECHANISMS:
            raise ValueError(
                f"sasl_mechanism {mechanism!r} is not supported; use one of {SUPPORTED_MECHANISMS}"
            )
        self._metadata = sasl_metadata(username, password, mechanism.upper())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(...)"

    def _with_credentials(self, details: Any) -> Any:
        metadata: Sequence[tuple[str, str | bytes]] = tuple(details.metadata or ())
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*metadata, *self._metadata),
            details.credentials,
            details.wait_for_ready,
        )


class SaslInterceptor(_SaslCredentials, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the SASL credentials to every unary call of a channel."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_credentials(details), request)


class SaslStreamInterceptor(_SaslCredentials, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """The same credentials on the channel's produce and fetch streams (a stream is
    authenticated once, when it opens). A class of its own: a grpc.aio channel files each
    interceptor under the first call kind it is an instance of."""

    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._with_credentials(details), request_iterator)


def sasl_interceptors(
    username: str | None, password: str | None, mechanism: str = "PLAIN"
) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors a channel needs: none without a username; one for unary calls and one
    for streams with one."""
    if not username:
        return []
    if password is None:
        raise ValueError("sasl_username is set but sasl_password is not")
    return [
        SaslInterceptor(username, password, mechanism),
        SaslStreamInterceptor(username, password, mechanism),
    ]


def credential_from_proto(message: metadata_pb2.UserCredential) -> ScryptCredential:
    if message.mechanism != metadata_pb2.CREDENTIAL_MECHANISM_SCRYPT:
        raise ValueError(f"credential mechanism {message.mechanism} is not SCRYPT")
    return ScryptCredential(message.salt, message.n, message.r, message.p, message.hash)


def credential_to_proto(credential: ScryptCredential) -> metadata_pb2.UserCredential:
    return metadata_pb2.UserCredential(
        mechanism=metadata_pb2.CREDENTIAL_MECHANISM_SCRYPT,
        salt=credential.salt,
        n=credential.n,
        r=credential.r,
        p=credential.p,
        hash=credential.hash,
    )

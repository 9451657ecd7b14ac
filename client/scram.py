"""SASL/SCRAM credentials (RFC 5802, RFC 7677) as Kafka stores them, derived on the client.

For a password, a random salt and an iteration count:

    SaltedPassword = PBKDF2-HMAC-H(password as UTF-8, salt, iterations)
    StoredKey      = H(HMAC-H(SaltedPassword, "Client Key"))
    ServerKey      = HMAC-H(SaltedPassword, "Server Key")

Only (salt, iterations, StoredKey, ServerKey) are stored; a broker checks a SCRAM login with
them and never sees the password. The password is hashed as its UTF-8 bytes without SASLprep,
as Kafka's ScramFormatter and librdkafka do, so a credential made here verifies their logins.

`Admin.create_user` derives one credential per mechanism beside the scrypt one, so a user made
with strom's SDK or CLI can log in with SCRAM on the Kafka listeners too. Kafka's own
AlterUserScramCredentials (a Kafka client's admin API) sends the salted password instead; the
Kafka listener turns it into these keys the same way (`from_salted_password`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from strom.v1 import metadata_pb2

# Kafka's mechanism names and numbers (org.apache.kafka.clients.admin.ScramMechanism).
MECHANISMS: dict[str, int] = {
    "SCRAM-SHA-256": metadata_pb2.SCRAM_SHA_256,
    "SCRAM-SHA-512": metadata_pb2.SCRAM_SHA_512,
}
MECHANISM_NAMES: dict[int, str] = {number: name for name, number in MECHANISMS.items()}
HASHES: dict[int, str] = {
    metadata_pb2.SCRAM_SHA_256: "sha256",
    metadata_pb2.SCRAM_SHA_512: "sha512",
}
# Kafka's bounds on the iteration count (ScramMechanism.minIterations / maxIterations).
ITERATIONS_MIN = 4096
ITERATIONS_MAX = 16384
ITERATIONS_DEFAULT = 4096
SALT_BYTES = 32
# scramp, which serves the exchange, refuses salts shorter than 12 bytes; Kafka's clients make
# 20 bytes and more.
SALT_BYTES_MIN = 12
SALT_BYTES_MAX = 1024


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """One mechanism's stored SCRAM credential. `repr` hides the salt and the keys."""

    mechanism: int  # metadata_pb2.ScramMechanism
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def __repr__(self) -> str:
        return f"ScramCredential({mechanism_name(self.mechanism)}, iterations={self.iterations})"

    def problem(self) -> str | None:
        """Why this credential may not be stored, or None."""
        if self.mechanism not in HASHES:
            return f"unknown SCRAM mechanism {self.mechanism}"
        if not ITERATIONS_MIN <= self.iterations <= ITERATIONS_MAX:
            return f"iterations must be in {ITERATIONS_MIN}..{ITERATIONS_MAX}"
        if not SALT_BYTES_MIN <= len(self.salt) <= SALT_BYTES_MAX:
            return f"the salt must be {SALT_BYTES_MIN}..{SALT_BYTES_MAX} bytes"
        size = hashlib.new(HASHES[self.mechanism]).digest_size
        if len(self.stored_key) != size or len(self.server_key) != size:
            return f"stored and server keys of {mechanism_name(self.mechanism)} are {size} bytes"
        return None


def mechanism_name(number: int) -> str:
    return MECHANISM_NAMES.get(number, f"SCRAM mechanism {number}")


def mechanism_number(name: str) -> int:
    """Kafka's number of a mechanism name (any case); ValueError naming the known ones."""
    number = MECHANISMS.get(name.strip().upper())
    if number is None:
        raise ValueError(f"unknown SCRAM mechanism {name!r}; use one of {', '.join(MECHANISMS)}")
    return number


def salted_password(mechanism: int, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(HASHES[mechanism], password.encode(), salt, iterations)


def from_salted_password(
    mechanism: int, salt: bytes, iterations: int, salted: bytes
) -> ScramCredential:
    """The stored form of a salted password (what Kafka's AlterUserScramCredentials sends)."""
    name = HASHES[mechanism]
    client_key = hmac.new(salted, b"Client Key", name).digest()
    stored_key = hashlib.new(name, client_key).digest()
    server_key = hmac.new(salted, b"Server Key", name).digest()
    return ScramCredential(mechanism, salt, iterations, stored_key, server_key)


def new_credential(
    mechanism: int, password: str, iterations: int = ITERATIONS_DEFAULT, salt: bytes | None = None
) -> ScramCredential:
    """A credential for `password` with a fresh random salt (unless one is given)."""
    if mechanism not in HASHES:
        raise ValueError(f"unknown SCRAM mechanism {mechanism}")
    if not password:
        raise ValueError("the password is empty")
    if not ITERATIONS_MIN <= iterations <= ITERATIONS_MAX:
        raise ValueError(f"SCRAM iterations must be in {ITERATIONS_MIN}..{ITERATIONS_MAX}")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    salted = salted_password(mechanism, password, salt, iterations)
    return from_salted_password(mechanism, salt, iterations, salted)


def credential_to_proto(credential: ScramCredential) -> metadata_pb2.ScramCredential:
    return metadata_pb2.ScramCredential(
        mechanism=credential.mechanism,  # type: ignore[arg-type]
        salt=credential.salt,
        iterations=credential.iterations,
        stored_key=credential.stored_key,
        server_key=credential.server_key,
    )


def credential_from_proto(message: metadata_pb2.ScramCredential) -> ScramCredential:
    return ScramCredential(
        int(message.mechanism), message.salt, message.iterations, message.stored_key,
        message.server_key,
    )  # fmt: skip

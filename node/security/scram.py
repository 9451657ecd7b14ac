"""The server side of SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka's
listeners speak it: two rounds inside SaslAuthenticate, checked against the SCRAM credentials
of the metadata log (client/scram.py says what they hold).

    client-first  n,,n=<user>,r=<client nonce>          -> server-first  r=<nonce>,s=<salt>,i=<n>
    client-final  c=biws,r=<nonce>,p=<proof>            -> server-final  v=<server signature>

`scramp` parses the messages, checks the nonce and the proof (in constant time) and signs the
answer; this module chooses the credential and turns every refusal into one `ScramFailed`
whose message is safe to send back and to log (never a password, proof or key). A login is a
few HMACs: no key derivation runs on the broker, so SCRAM logins need no login queue.

Rules:
- Lookup order as for PLAIN (node/security/credentials.py): the node's own user
  (`node.sasl.username`, credentials derived from its configured password at first use), then
  the users of the metadata image.
- An unknown user (or a user without a credential of this mechanism) gets a decoy
  server-first: a salt derived from a per-process key and the name (the same on every try, as
  a real salt is) and the default iteration count; the proof then fails like a wrong password.
  Neither the answer nor its timing says whether the user exists.
- A malformed message, a wrong nonce, a channel-binding request or an authorization id
  different from nobody is refused with a message naming the problem; any refusal ends the
  exchange (the Kafka listener then closes the connection).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping

from scramp import ScramException, ScramMechanism  # type: ignore[import-untyped]
from scramp.core import ServerError  # type: ignore[import-untyped]

from strom.client import scram
from strom.client.scram import ScramCredential

MESSAGE_BYTES_MAX = 4096  # a SCRAM message is ~100 bytes; anything this long is not one
WRONG_CREDENTIALS = "authentication failed: wrong username or password"


class ScramFailed(Exception):
    """A refused SCRAM login; the message is safe to send back. `reason` labels the failure
    metric: credentials (wrong password or unknown user) or malformed."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class ScramLogins:
    """Where SCRAM exchanges find credentials; one per node."""

    def __init__(
        self,
        credential_of: Callable[[str, int], ScramCredential | None],
        node_passwords: Mapping[str, str] | None = None,
    ) -> None:
        """`credential_of(name, mechanism)`: the metadata image's credential. `node_passwords`:
        the node's own user and password (from its config)."""
        self._credential_of = credential_of
        self._node_passwords = dict(node_passwords or {})
        self._node_credentials: dict[tuple[str, int], ScramCredential] = {}
        self._key = os.urandom(32)
        self._decoy_keys = {
            m: os.urandom(hashlib.new(h).digest_size) for m, h in scram.HASHES.items()
        }

    def credential(self, name: str, mechanism: int) -> ScramCredential | None:
        password = self._node_passwords.get(name)
        if password is not None:
            key = (name, mechanism)
            if key not in self._node_credentials:
                self._node_credentials[key] = scram.new_credential(mechanism, password)
            return self._node_credentials[key]
        return self._credential_of(name, mechanism)

    def decoy(self, name: str, mechanism: int) -> ScramCredential:
        """What an unknown user is checked against: no proof matches its keys."""
        salt = hmac.new(self._key, f"{mechanism}\0{name}".encode(), hashlib.sha256).digest()
        key = self._decoy_keys[mechanism]
        return ScramCredential(mechanism, salt, scram.ITERATIONS_DEFAULT, key, key)

    def start(self, mechanism_name: str) -> ScramExchange:
        return ScramExchange(self, scram.mechanism_number(mechanism_name))


class ScramExchange:
    """One login's server side: `first` answers the client-first message, `final` the
    client-final one and sets `username`. Any error raises ScramFailed and ends the exchange."""

    def __init__(self, logins: ScramLogins, mechanism: int) -> None:
        self.logins = logins
        self.mechanism = mechanism
        self.username: str | None = None  # set once the proof checked out
        self._claimed = ""  # the name the client-first message gave
        self._known = False
        self._server = ScramMechanism(scram.mechanism_name(mechanism)).make_server(self._auth_info)
        self._stage = "first"

    def _auth_info(self, name: str) -> tuple[bytes, bytes, bytes, int]:
        credential = self.logins.credential(name, self.mechanism)
        self._claimed, self._known = name, credential is not None
        if credential is None:
            credential = self.logins.decoy(name, self.mechanism)
        return credential.salt, credential.stored_key, credential.server_key, credential.iterations

    def first(self, message: bytes) -> bytes:
        """The server-first message for a client-first message."""
        text = self._take("first", "client-first", message)
        try:
            self._server.set_client_first(text)
            answer: str = self._server.get_server_first()
        except ScramException as exc:
            raise ScramFailed(f"malformed SCRAM client-first message: {_reason(exc)}") from None
        self._stage = "final"
        return answer.encode()

    def final(self, message: bytes) -> bytes:
        """The server-final message for a client-final message whose proof is right."""
        text = self._take("final", "client-final", message)
        try:
            self._server.set_client_final(text)
            answer: str = self._server.get_server_final()
        except ScramException as exc:
            if getattr(exc, "server_error", None) == ServerError.INVALID_PROOF:
                raise ScramFailed(WRONG_CREDENTIALS, "credentials") from None
            raise ScramFailed(f"malformed SCRAM client-final message: {_reason(exc)}") from None
        if not self._known:  # a decoy's keys match no proof; never admit an unknown user
            raise ScramFailed(WRONG_CREDENTIALS, "credentials")
        self.username = self._claimed
        return answer.encode()

    def _take(self, stage: str, what: str, message: bytes) -> str:
        if self._stage != stage:
            self._stage = "over"
            raise ScramFailed(f"unexpected SCRAM {what} message")
        self._stage = "over"  # until this step succeeds: a failed exchange cannot go on
        if len(message) > MESSAGE_BYTES_MAX:
            raise ScramFailed(f"SCRAM {what} message longer than {MESSAGE_BYTES_MAX} bytes")
        try:
            return message.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramFailed(f"malformed SCRAM {what} message: not UTF-8") from None


def _reason(exc: ScramException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text[:200]

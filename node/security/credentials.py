"""Checking a username and password against stored scrypt credentials, without paying scrypt on
every RPC.

A login derives `scrypt(password, salt, n, r, p)` with the stored salt and work factors and
compares it with the stored key in constant time (`hmac.compare_digest`). Derivation runs in a
worker thread (hashlib releases the GIL) so the event loop never stalls for it, at most
`derivations_in_flight_max` at a time so a flood of wrong passwords cannot take every core,
scheduled by `login_queue.LoginQueue`: bounded per user and per connection, connections that
failed recently last, users in turn.

An unknown username costs the same derivation as a known one, against a decoy credential with
the default work factors, so the answer's timing does not tell whether the user exists.

Successes are cached, keyed by HMAC-SHA256(process key, username, password): the cache holds no
password and nothing that could be replayed elsewhere (the key is random per process). An entry
remembers the credential it was checked against and counts only while that is still the user's
current credential, so changing a password or deleting a user invalidates it at once; `forget`
also drops the entries of users the metadata log changed. Failures are never cached. The cache
holds at most `cache_entries_max` entries, least recently used first out.

Lookup order: the node's own credential (`node.sasl.username`) first, so a metadata-log user of
the same name can never lock nodes out of each other, then the users in the metadata image. The
node's password is in its config, so its logins are checked by comparing keyed digests in
constant time, with no scrypt and no queue: a node's login never waits behind a flood. A wrong
password for the node's name still costs a (decoy) derivation, as for every other user.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from strom.client import sasl
from strom.client.sasl import PASSWORD_LENGTH_MAX, USERNAME_LENGTH_MAX, ScryptCredential

from .login_queue import IN_FLIGHT_MAX, LoginQueue

CACHE_ENTRIES_MAX = 4096
DERIVATIONS_IN_FLIGHT_MAX = IN_FLIGHT_MAX


class CredentialVerifier:
    def __init__(
        self,
        users: Callable[[], Mapping[str, ScryptCredential]],
        node_passwords: Mapping[str, str] | None = None,
        *,
        cache_entries_max: int = CACHE_ENTRIES_MAX,
        derivations_in_flight_max: int = DERIVATIONS_IN_FLIGHT_MAX,
    ) -> None:
        self._users = users
        self._cache: OrderedDict[bytes, tuple[str, ScryptCredential]] = OrderedDict()
        self._cache_entries_max = cache_entries_max
        self._key = os.urandom(32)
        # username -> keyed digest of its password (the node's own login, from its config)
        self._nodes = {
            name: self._cache_key(name, password)
            for name, password in (node_passwords or {}).items()
        }
        self.queue = LoginQueue(in_flight_max=derivations_in_flight_max)
        self.derivations = 0  # how many scrypt derivations ran (tests and metrics)
        # Unknown users are checked against this: same work factors as a default credential,
        # a random key no password derives to.
        self._decoy = ScryptCredential(
            os.urandom(sasl.SALT_BYTES), sasl.SCRYPT_N, sasl.SCRYPT_R, sasl.SCRYPT_P,
            os.urandom(sasl.HASH_BYTES),
        )  # fmt: skip

    def credential_of(self, username: str) -> ScryptCredential | None:
        """The metadata-log credential of `username` (None for the node's own name)."""
        return None if username in self._nodes else self._users().get(username)

    def _cache_key(self, username: str, password: str) -> bytes:
        data = username.encode() + b"\0" + password.encode()
        return hmac.new(self._key, data, hashlib.sha256).digest()

    async def verify(self, username: str, password: str, peer: str = "") -> bool:
        """Whether `password` is `username`'s current password. `peer` names the connection
        (bounds and lanes of the login queue). Raises `LoginRefused` when too many attempts of
        this user or connection are in flight."""
        if not username or len(username) > USERNAME_LENGTH_MAX:
            return False
        if not password or len(password) > PASSWORD_LENGTH_MAX:
            return False
        key = self._cache_key(username, password)
        node_key = self._nodes.get(username)
        if node_key is not None and hmac.compare_digest(key, node_key):
            return True
        credential = self.credential_of(username)
        cached = self._cache.get(key)
        if credential is not None and cached is not None and cached[1] == credential:
            self._cache.move_to_end(key)
            return True
        target = self._decoy if credential is None else credential
        derived = await self.queue.run(username, peer, lambda: self._derive(target, password))
        if credential is None or not hmac.compare_digest(derived, credential.hash):
            self.queue.record_failure(peer)
            return False
        self._cache[key] = (username, credential)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_entries_max:
            self._cache.popitem(last=False)
        return True

    async def _derive(self, credential: ScryptCredential, password: str) -> bytes:
        self.derivations += 1
        return await asyncio.to_thread(
            sasl.derive, password, credential.salt, credential.n, credential.r, credential.p
        )

    def forget(self, usernames: Iterable[str]) -> None:
        """Drop cached successes of users whose credential changed or who were deleted."""
        names = set(usernames)
        if not names:
            return
        for key in [k for k, (user, _) in self._cache.items() if user in names]:
            credential = self.credential_of(self._cache[key][0])
            if credential != self._cache[key][1]:
                del self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)

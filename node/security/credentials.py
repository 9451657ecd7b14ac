"""Checking a username and password against stored scrypt credentials, without paying scrypt on
every RPC.

A login derives `scrypt(password, salt, n, r, p)` with the stored salt and work factors and
compares it with the stored key in constant time (`hmac.compare_digest`). Derivation runs in a
worker thread (hashlib releases the GIL) so the event loop never stalls for it, at most
`derivations_in_flight_max` at a time so a flood of wrong passwords cannot take every core.

Successes are cached, keyed by HMAC-SHA256(process key, username, password): the cache holds no
password and nothing that could be replayed elsewhere (the key is random per process). An entry
remembers the credential it was checked against and counts only while that is still the user's
current credential, so changing a password or deleting a user invalidates it at once; `forget`
also drops the entries of users the metadata log changed. Failures are never cached. The cache
holds at most `cache_entries_max` entries, least recently used first out.

Lookup order: the node's own static credential (`node.sasl.username`) first, so a metadata-log
user of the same name can never lock nodes out of each other, then the users in the metadata
image.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from strom.client.sasl import PASSWORD_LENGTH_MAX, USERNAME_LENGTH_MAX, ScryptCredential, derive

CACHE_ENTRIES_MAX = 4096
DERIVATIONS_IN_FLIGHT_MAX = 2


class CredentialVerifier:
    def __init__(
        self,
        users: Callable[[], Mapping[str, ScryptCredential]],
        static: Mapping[str, ScryptCredential] | None = None,
        *,
        cache_entries_max: int = CACHE_ENTRIES_MAX,
        derivations_in_flight_max: int = DERIVATIONS_IN_FLIGHT_MAX,
    ) -> None:
        self._users = users
        self._static = dict(static or {})
        self._cache: OrderedDict[bytes, tuple[str, ScryptCredential]] = OrderedDict()
        self._cache_entries_max = cache_entries_max
        self._key = os.urandom(32)
        self._derivations = asyncio.Semaphore(derivations_in_flight_max)
        self.derivations = 0  # how many scrypt derivations ran (tests and metrics)

    def credential_of(self, username: str) -> ScryptCredential | None:
        static = self._static.get(username)
        return static if static is not None else self._users().get(username)

    def _cache_key(self, username: str, password: str) -> bytes:
        data = username.encode() + b"\0" + password.encode()
        return hmac.new(self._key, data, hashlib.sha256).digest()

    async def verify(self, username: str, password: str) -> bool:
        """Whether `password` is `username`'s current password."""
        if not username or len(username) > USERNAME_LENGTH_MAX:
            return False
        if not password or len(password) > PASSWORD_LENGTH_MAX:
            return False
        credential = self.credential_of(username)
        if credential is None:
            return False
        key = self._cache_key(username, password)
        cached = self._cache.get(key)
        if cached is not None and cached[1] == credential:
            self._cache.move_to_end(key)
            return True
        async with self._derivations:
            self.derivations += 1
            derived = await asyncio.to_thread(
                derive, password, credential.salt, credential.n, credential.r, credential.p
            )
        if not hmac.compare_digest(derived, credential.hash):
            return False
        self._cache[key] = (username, credential)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_entries_max:
            self._cache.popitem(last=False)
        return True

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

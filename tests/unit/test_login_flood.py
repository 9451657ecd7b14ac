"""A login flood cannot starve real logins (issue #15, defect 4).

500 concurrent wrong passwords for one user took 18 s to drain and held a first login of another
user for 17 s (two scrypt checks at a time, first come first served); an unknown user was
answered in 1-2 ms against 80 ms for a wrong password, so user names could be enumerated by
timing; refused logins were not logged. The assertions count and order scrypt derivations (a
stand-in records each call), so they do not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterator

import pytest

from strom.client import sasl
from strom.client.sasl import ScryptCredential, sasl_metadata
from strom.node.security import credentials
from strom.node.security.authn import AuthenticationError, Authenticator
from strom.node.security.credentials import CredentialVerifier

PENDING_PER_USER_MAX = 8  # node/security/login_queue.py (a literal: this test must run on main)


def fake_derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.sha256(salt + password.encode()).digest()


def credential(password: str) -> ScryptCredential:
    salt = password.encode().ljust(16, b"s")
    return ScryptCredential(salt, sasl.SCRYPT_N, sasl.SCRYPT_R, sasl.SCRYPT_P,
                            fake_derive(password, salt, 0, 0, 0))  # fmt: skip


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int, int, int]]]:
    """Every derivation, in the order they ran: (password, n, r, p)."""
    calls: list[tuple[str, int, int, int]] = []

    def recording(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        calls.append((password, n, r, p))
        return fake_derive(password, salt, n, r, p)

    monkeypatch.setattr(sasl, "derive", recording)
    monkeypatch.setattr(credentials, "derive", recording, raising=False)  # main's import
    yield calls


def verifier() -> CredentialVerifier:
    users = {"alice": credential("alice-pw"), "bob": credential("bob-pw")}
    return CredentialVerifier(lambda: users, {"node": "node-pw"})


async def attempt(v: CredentialVerifier, user: str, password: str, peer: str) -> bool | None:
    """True/False: checked; None: refused before any check (too many in flight)."""
    try:
        return await v.verify(user, password, peer)  # type: ignore[call-arg]
    except TypeError:
        return await v.verify(user, password)  # main: no peer
    except Exception as exc:
        if type(exc).__name__ == "LoginRefused":
            return None
        raise


def test_a_login_of_another_user_does_not_wait_behind_a_flood(
    derivations: list[tuple[str, int, int, int]],
) -> None:
    async def scenario() -> list[bool | None]:
        v = verifier()
        flood = [attempt(v, "alice", f"guess-{i}", f"ipv4:10.0.0.{i}:5000") for i in range(200)]
        return await asyncio.gather(*flood, attempt(v, "bob", "bob-pw", "ipv4:10.9.9.9:6000"))

    results = asyncio.run(scenario())
    assert results[-1] is True
    order = [password for password, *_ in derivations]
    # Two run at once; usernames take turns: bob's check is among the first few, not the 201st.
    assert order.index("bob-pw") <= 3, order.index("bob-pw")
    # The flood is bounded per user: the rest were refused before any scrypt work.
    assert sum(1 for p in order if p.startswith("guess-")) <= PENDING_PER_USER_MAX
    assert results[:-1].count(None) == 200 - PENDING_PER_USER_MAX


def test_recent_failures_wait_behind_everyone_else(
    derivations: list[tuple[str, int, int, int]],
) -> None:
    async def scenario() -> None:
        v = verifier()
        assert await attempt(v, "alice", "guess", "ipv4:10.0.0.1:1") is False
        derivations.clear()
        await asyncio.gather(
            *(attempt(v, "mallory", f"again-{i}", "ipv4:10.0.0.1:1") for i in range(3)),
            attempt(v, "carol", "nope", "ipv4:10.0.0.2:1"),
            attempt(v, "bob", "bob-pw", "ipv4:10.0.0.3:1"),
        )

    asyncio.run(scenario())
    order = [password for password, *_ in derivations]
    # The failed connection's first two retries found the two slots free; after that, attempts
    # from clean connections (carol, bob) go before its third.
    assert order == ["again-0", "again-1", "nope", "bob-pw", "again-2"], order


def test_a_node_login_never_waits_behind_a_flood(
    derivations: list[tuple[str, int, int, int]],
) -> None:
    async def scenario() -> bool | None:
        v = verifier()
        flood = [attempt(v, "node", f"guess-{i}", f"ipv4:10.0.1.{i}:1") for i in range(50)]
        flood += [attempt(v, "alice", f"guess-{i}", f"ipv4:10.0.2.{i}:1") for i in range(50)]
        results = await asyncio.gather(*flood, attempt(v, "node", "node-pw", "ipv4:10.0.0.7:1"))
        assert results[:-1].count(True) == 0
        return results[-1]

    assert asyncio.run(scenario()) is True
    # Checked against the configured password: no scrypt, no queue.
    assert "node-pw" not in [password for password, *_ in derivations]


def test_an_unknown_user_costs_the_same_scrypt_work(
    derivations: list[tuple[str, int, int, int]],
) -> None:
    async def scenario() -> None:
        v = verifier()
        assert await attempt(v, "nobody", "guess", "ipv4:10.0.0.1:1") is False
        assert await attempt(v, "alice", "guess", "ipv4:10.0.0.2:1") is False

    asyncio.run(scenario())
    assert len(derivations) == 2
    (_, *unknown), (_, *known) = derivations
    assert unknown == known == [sasl.SCRYPT_N, sasl.SCRYPT_R, sasl.SCRYPT_P]


def test_a_refused_login_is_delayed_logged_and_counted(
    derivations: list[tuple[str, int, int, int]], caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> float:
        authenticator = Authenticator(  # type: ignore[call-arg]
            "SASL_PLAINTEXT", verifier(), failure_delay_s=0.2
        )
        started = time.monotonic()
        with pytest.raises(AuthenticationError):
            await authenticator.principal(  # type: ignore[call-arg]
                sasl_metadata("alice", "wrong"), {}, "ipv4:10.1.2.3:4567"
            )
        elapsed = time.monotonic() - started
        assert (
            await authenticator.principal(  # type: ignore[call-arg]
                sasl_metadata("alice", "alice-pw"), {}, "ipv4:10.1.2.3:4567"
            )
            == "User:alice"
        )
        return elapsed

    with caplog.at_level(logging.INFO, logger="strom.security"):
        elapsed = asyncio.run(scenario())
    assert elapsed >= 0.2  # a lower bound only: never flaky
    lines = [r.getMessage() for r in caplog.records if "failed authentication" in r.getMessage()]
    assert len(lines) == 1 and "ipv4:10.1.2.3:4567" in lines[0], lines
    assert "wrong" not in lines[0].replace("wrong username", "")  # never the password

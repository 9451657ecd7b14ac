"""Kafka's DescribeUserScramCredentials (50) and AlterUserScramCredentials (51), onto strom's
DescribeUsers and AlterUserCredentials (the same authorization rules: DESCRIBE, resp. ALTER on
the cluster, as in Kafka).

Kafka's rules, kept here:
- Alter: a Kafka client sends the salted password (PBKDF2 of the password, computed on the
  client) with its salt and iteration count; this listener turns it into StoredKey and
  ServerKey (client/scram.py) at once, so neither the salted password nor the password reaches
  the controller or the metadata log. One result per user; a user's operations succeed or fail
  together; an unknown mechanism is UNSUPPORTED_SASL_MECHANISM; an empty user name, salt or
  salted password or an iteration count outside 4096..16384 UNACCEPTABLE_CREDENTIAL; a
  mechanism named twice for one user DUPLICATE_RESOURCE; deleting a missing credential
  RESOURCE_NOT_FOUND.
- Describe: null or empty `users` describes every user that has a SCRAM credential; a named
  user without one is RESOURCE_NOT_FOUND, a name given twice DUPLICATE_RESOURCE. Only
  mechanisms and iteration counts are answered, never salts or keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from strom.client import scram
from strom.v1 import admin_pb2, common_pb2

from .admin_apis import Refused
from .codec import Message
from .listener import Session

if TYPE_CHECKING:
    from .admin_apis import KafkaAdminApis

NONE = 0
RESOURCE_NOT_FOUND = common_pb2.RESOURCE_NOT_FOUND
DUPLICATE_RESOURCE = common_pb2.DUPLICATE_RESOURCE
UNACCEPTABLE_CREDENTIAL = common_pb2.UNACCEPTABLE_CREDENTIAL
UNSUPPORTED_SASL_MECHANISM = common_pb2.UNSUPPORTED_SASL_MECHANISM
SALTED_PASSWORD_BYTES_MAX = 1024


def _none_if_empty(text: str) -> str | None:
    return text or None


class ScramCredentialApis:
    """The two SCRAM credential handlers of one Kafka listener."""

    def __init__(self, admin_apis: KafkaAdminApis) -> None:
        self.admin_apis = admin_apis

    def handlers(self) -> dict[int, Callable[[Session, int, Message], Awaitable[Message | None]]]:
        return {50: self.describe, 51: self.alter}

    async def describe(self, session: Session, version: int, body: Message) -> Message:
        asked = [u["name"] for u in body["users"] or ()]
        twice = {name for name in asked if asked.count(name) > 1}
        unique = [name for name in dict.fromkeys(asked) if name not in twice]
        answer: Message = {"throttle_time_ms": 0, "error_code": NONE, "error_message": None}
        results: list[Message] = []
        if unique or not asked:
            admin = self.admin_apis.apis.admin
            try:
                response = await self.admin_apis._call(
                    session, "/strom.v1.Admin/DescribeUsers",
                    admin_pb2.DescribeUsersRequest(names=unique), admin.DescribeUsers,
                )  # fmt: skip
            except Refused as exc:
                return {**answer, "error_code": exc.code, "error_message": str(exc),
                        "results": []}  # fmt: skip
            for user in response.users:
                if user.error_code == NONE and user.scram:
                    infos = [{"mechanism": int(c.mechanism), "iterations": c.iterations}
                             for c in user.scram]  # fmt: skip
                    results.append({"user": user.name, "error_code": NONE,
                                    "error_message": None, "credential_infos": infos})  # fmt: skip
                elif asked:  # every user is listed when none is named: skip those without SCRAM
                    results.append(_user_error(
                        user.name, RESOURCE_NOT_FOUND,
                        f"attempt to describe a user credential that does not exist: {user.name}",
                    ))  # fmt: skip
        results += [
            _user_error(name, DUPLICATE_RESOURCE, "cannot describe the same user twice")
            for name in sorted(twice)
        ]
        return {**answer, "results": results}

    async def alter(self, session: Session, version: int, body: Message) -> Message:
        users = list(dict.fromkeys(
            [d["name"] for d in body["deletions"]] + [u["name"] for u in body["upsertions"]]
        ))  # fmt: skip
        errors: dict[str, tuple[int, str]] = {}
        request = admin_pb2.AlterUserCredentialsRequest()
        for name in users:
            if not name:  # Kafka's answer to an empty user name
                errors[name] = (UNACCEPTABLE_CREDENTIAL, "the user name is empty")
        for d in body["deletions"]:
            if d["mechanism"] not in scram.HASHES:
                errors.setdefault(d["name"], _unknown_mechanism(d["mechanism"]))
            request.scram_deletions.add(name=d["name"], mechanism=d["mechanism"])
        for u in body["upsertions"]:
            problem = _upsertion_problem(u)
            if problem is not None:
                errors.setdefault(u["name"], problem)
                continue
            credential = scram.from_salted_password(
                u["mechanism"], u["salt"], u["iterations"], u["salted_password"]
            )
            request.scram_upsertions.add(
                name=u["name"], credential=scram.credential_to_proto(credential)
            )
        # Users with a problem found here send nothing: their operations fail together.
        _drop_users(request, set(errors))
        if request.scram_upsertions or request.scram_deletions:
            admin = self.admin_apis.apis.admin
            try:
                response = await self.admin_apis._call(
                    session, "/strom.v1.Admin/AlterUserCredentials", request,
                    admin.AlterUserCredentials,
                )  # fmt: skip
                for r in response.results:
                    if r.error_code != NONE:
                        errors.setdefault(r.name, (r.error_code, r.error_message))
            except Refused as exc:
                for name in users:
                    errors.setdefault(name, (exc.code, str(exc)))
        return {
            "throttle_time_ms": 0,
            "results": [
                {"user": name, "error_code": errors.get(name, (NONE, ""))[0],
                 "error_message": _none_if_empty(errors.get(name, (NONE, ""))[1])}
                for name in users
            ],
        }  # fmt: skip


def _user_error(name: str, code: int, message: str) -> Message:
    return {"user": name, "error_code": code, "error_message": message, "credential_infos": []}


def _unknown_mechanism(mechanism: int) -> tuple[int, str]:
    return UNSUPPORTED_SASL_MECHANISM, f"unknown SCRAM mechanism {mechanism}"


def _upsertion_problem(u: Message) -> tuple[int, str] | None:
    if u["mechanism"] not in scram.HASHES:
        return _unknown_mechanism(u["mechanism"])
    if not u["salted_password"] or len(u["salted_password"]) > SALTED_PASSWORD_BYTES_MAX:
        return UNACCEPTABLE_CREDENTIAL, "the salted password is empty or too long"
    if not u["salt"]:
        return UNACCEPTABLE_CREDENTIAL, "the salt is empty"
    if not scram.ITERATIONS_MIN <= u["iterations"] <= scram.ITERATIONS_MAX:
        return (
            UNACCEPTABLE_CREDENTIAL,
            f"iterations must be in {scram.ITERATIONS_MIN}..{scram.ITERATIONS_MAX}",
        )
    return None


def _drop_users(request: admin_pb2.AlterUserCredentialsRequest, names: set[str]) -> None:
    keep_up = [u for u in request.scram_upsertions if u.name not in names]
    keep_del = [d for d in request.scram_deletions if d.name not in names]
    del request.scram_upsertions[:]
    del request.scram_deletions[:]
    request.scram_upsertions.extend(keep_up)
    request.scram_deletions.extend(keep_del)

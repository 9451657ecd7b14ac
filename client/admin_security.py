"""Admin operations on users and ACLs, mixed into AsyncAdmin (client/admin.py).

`create_user` derives the stored credentials (random salt, scrypt; and one SCRAM credential per
mechanism, client/scram.py) on the client, in a worker thread, and sends only those: the
password never leaves this process except as the SASL login of the client that later uses it. Needs ALTER on the cluster (DESCRIBE to list) when the
cluster's authorizer is on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from strom.v1 import admin_pb2, common_pb2, metadata_pb2

from . import scram
from .acl import (
    AclBinding,
    AclBindingFilter,
    binding_from_proto,
    binding_to_proto,
    filter_to_proto,
)
from .cluster import ClusterClient
from .errors import FatalError, error_from_code
from .sasl import credential_to_proto, new_credential


@dataclass(frozen=True, slots=True)
class UserDescription:
    """A user as DescribeUsers shows it: never the salt or the hash."""

    name: str
    mechanism: str  # "SCRYPT", or "" for a user with SCRAM credentials only
    n: int  # the scrypt cost of its credential
    # (mechanism, iteration count) of each SCRAM credential: ("SCRAM-SHA-256", 4096), ...
    scram: tuple[tuple[str, int], ...] = ()


class AsyncSecurityAdmin:
    cluster: ClusterClient

    async def _admin_call(self, method: str, request: Any) -> Any:
        return await self.cluster.call_any(
            lambda a: getattr(self.cluster.admin_stub(a), method), request
        )

    async def create_user(
        self,
        name: str,
        password: str,
        scram_mechanisms: Sequence[str] = tuple(scram.MECHANISMS),
        scram_iterations: int = scram.ITERATIONS_DEFAULT,
    ) -> None:
        """Create a user, or change its password (Kafka's upsert semantics). The user can log in
        with SASL/PLAIN everywhere, and with each of `scram_mechanisms` on Kafka listeners
        (none: SCRAM logins refused, old SCRAM credentials removed)."""
        try:
            mechanisms = [scram.mechanism_number(m) for m in scram_mechanisms]
            credential, scram_credentials = await asyncio.to_thread(
                _derive_all, password, mechanisms, scram_iterations
            )
        except ValueError as exc:
            raise FatalError(common_pb2.UNACCEPTABLE_CREDENTIAL, str(exc)) from None
        request = admin_pb2.AlterUserCredentialsRequest(
            upsertions=[
                admin_pb2.UserCredentialUpsertion(
                    name=name,
                    credential=credential_to_proto(credential),
                    scram=[scram.credential_to_proto(c) for c in scram_credentials],
                )
            ]
        )
        _raise_first((await self._admin_call("AlterUserCredentials", request)).results)

    async def delete_user(self, name: str) -> None:
        request = admin_pb2.AlterUserCredentialsRequest(deletions=[name])
        _raise_first((await self._admin_call("AlterUserCredentials", request)).results)

    async def describe_users(self, names: Sequence[str] | None = None) -> list[UserDescription]:
        request = admin_pb2.DescribeUsersRequest(names=list(names or ()))
        response = await self._admin_call("DescribeUsers", request)
        _raise_first(response.users)
        return [
            UserDescription(
                u.name,
                metadata_pb2.CredentialMechanism.Name(u.mechanism)
                .removeprefix("CREDENTIAL_MECHANISM_")
                .replace("UNKNOWN", ""),
                u.n,
                tuple((scram.mechanism_name(c.mechanism), c.iterations) for c in u.scram),
            )
            for u in response.users
        ]

    async def create_acls(self, bindings: Sequence[AclBinding]) -> None:
        for binding in bindings:
            problem = binding.problem()
            if problem:
                raise FatalError(common_pb2.INVALID_REQUEST, f"invalid ACL {binding}: {problem}")
        request = admin_pb2.CreateAclsRequest(creations=[binding_to_proto(b) for b in bindings])
        _raise_first((await self._admin_call("CreateAcls", request)).results)

    async def delete_acls(self, filters: Sequence[AclBindingFilter]) -> list[AclBinding]:
        """Delete every binding any filter matches; returns what was deleted."""
        request = admin_pb2.DeleteAclsRequest(filters=[filter_to_proto(f) for f in filters])
        response = await self._admin_call("DeleteAcls", request)
        _raise_first(response.results)
        return sorted({binding_from_proto(b) for r in response.results for b in r.deleted})

    async def describe_acls(self, selector: AclBindingFilter | None = None) -> list[AclBinding]:
        request = admin_pb2.DescribeAclsRequest(
            filter=filter_to_proto(selector or AclBindingFilter())
        )
        response = await self._admin_call("DescribeAcls", request)
        if response.error_code != common_pb2.NONE:
            raise error_from_code(response.error_code, response.error_message)
        return [binding_from_proto(b) for b in response.bindings]


def _raise_first(results: Sequence[Any]) -> None:
    for result in results:
        if result.error_code != common_pb2.NONE:
            raise error_from_code(result.error_code, result.error_message)


def _derive_all(
    password: str, mechanisms: Sequence[int], iterations: int
) -> tuple[Any, list[scram.ScramCredential]]:
    """The scrypt credential and one SCRAM credential per mechanism, for one password."""
    if len(set(mechanisms)) != len(mechanisms):
        raise ValueError("a SCRAM mechanism is named twice")
    credential = new_credential(password)
    return credential, [scram.new_credential(m, password, iterations) for m in mechanisms]

"""Admin operations on users and ACLs, mixed into AsyncAdmin (client/admin.py).

`create_user` derives the stored credential (random salt, scrypt) on the client, in a worker
thread, and sends only that: the password never leaves this process except as the SASL login
of the client that later uses it. Needs ALTER on the cluster (DESCRIBE to list) when the
cluster's authorizer is on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from strom.v1 import admin_pb2, common_pb2, metadata_pb2

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
    mechanism: str  # "SCRYPT"
    n: int  # the scrypt cost of its credential


class AsyncSecurityAdmin:
    cluster: ClusterClient

    async def _admin_call(self, method: str, request: Any) -> Any:
        return await self.cluster.call_any(
            lambda a: getattr(self.cluster.admin_stub(a), method), request
        )

    async def create_user(self, name: str, password: str) -> None:
        """Create a user, or change its password (Kafka's upsert semantics)."""
        try:
            credential = await asyncio.to_thread(new_credential, password)
        except ValueError as exc:
            raise FatalError(common_pb2.UNACCEPTABLE_CREDENTIAL, str(exc)) from None
        request = admin_pb2.AlterUserCredentialsRequest(
            upsertions=[
                admin_pb2.UserCredentialUpsertion(
                    name=name, credential=credential_to_proto(credential)
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
                metadata_pb2.CredentialMechanism.Name(u.mechanism).removeprefix(
                    "CREDENTIAL_MECHANISM_"
                ),
                u.n,
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

"""The controller's decisions on users and ACLs: validate against the image, emit records.

Pure functions of the (speculative) image. A user's credential arrives already derived by the
client (salt, scrypt work factors, key; SCRAM salts, iteration counts and keys), so no password
ever reaches the controller; the work factors are bounded here so that no stored credential can
make a login expensive. Creating an ACL that exists already succeeds without a record; deleting
by filter removes every match.

Users and their SCRAM credentials (Kafka's UserScramCredentialRecord, one per mechanism):
- Upserting a user's password (`upsert_user`) replaces its SCRAM credentials with the ones
  derived from the same password, and removes those of mechanisms it does not name: after a
  password change the old password works nowhere.
- Deleting a user removes its scrypt credential and every SCRAM credential.
- Kafka's AlterUserScramCredentials (`alter_scram`) edits single mechanisms; a user's
  operations in one request succeed or fail together, as in Kafka's ScramControlManager. It
  may create a user that has SCRAM credentials only (Kafka's way of creating users).
"""

from __future__ import annotations

from collections.abc import Sequence

from strom.client import scram
from strom.client.acl import AclBinding, AclBindingFilter, binding_to_proto
from strom.client.sasl import USERNAME_LENGTH_MAX, ScryptCredential, credential_to_proto
from strom.client.scram import ScramCredential
from strom.node.metadata.image import MetadataImage
from strom.v1 import common_pb2, metadata_pb2

from .errors import ControllerError

Record = metadata_pb2.MetadataRecord


def validate_username(name: str) -> None:
    if not name or len(name) > USERNAME_LENGTH_MAX:
        raise ControllerError(
            common_pb2.INVALID_REQUEST, f"user names are 1..{USERNAME_LENGTH_MAX} characters"
        )
    if not name.isprintable() or name.strip() != name or name == "*":
        raise ControllerError(
            common_pb2.INVALID_REQUEST,
            "a user name must be printable, without surrounding spaces, and not '*'",
        )


def upsert_user(
    image: MetadataImage,
    name: str,
    credential: ScryptCredential,
    scram_credentials: Sequence[ScramCredential] = (),
) -> list[Record]:
    validate_username(name)
    problem = credential.problem()
    if problem:
        raise ControllerError(common_pb2.UNACCEPTABLE_CREDENTIAL, f"user {name!r}: {problem}")
    given: dict[int, ScramCredential] = {}
    for one in scram_credentials:
        _check_scram(name, one)
        if one.mechanism in given:
            raise ControllerError(
                common_pb2.DUPLICATE_RESOURCE,
                f"user {name!r}: {scram.mechanism_name(one.mechanism)} is given twice",
            )
        given[one.mechanism] = one
    records = [
        Record(
            user_credential=metadata_pb2.UserCredentialRecord(
                name=name, credential=credential_to_proto(credential)
            )
        )
    ]
    records += [_scram_record(name, one) for _, one in sorted(given.items())]
    # Mechanisms the new password was not derived for lose the old password's credential.
    records += [
        _remove_scram_record(name, m) for m in sorted(image.scram_of(name)) if m not in given
    ]
    return records


def delete_user(image: MetadataImage, name: str) -> list[Record]:
    mechanisms = sorted(image.scram_of(name))
    if name not in image.users and not mechanisms:
        raise ControllerError(common_pb2.RESOURCE_NOT_FOUND, f"user {name!r} does not exist")
    records = [_remove_scram_record(name, m) for m in mechanisms]
    if name in image.users:
        records.append(
            Record(remove_user_credential=metadata_pb2.RemoveUserCredentialRecord(name=name))
        )
    return records


def alter_scram(
    image: MetadataImage,
    name: str,
    upsertions: Sequence[ScramCredential],
    deletions: Sequence[int],
) -> list[Record]:
    """Kafka's AlterUserScramCredentials for one user: every operation or none. A mechanism
    named twice (upserted twice, or upserted and deleted) is DUPLICATE_RESOURCE, deleting a
    credential the user does not have RESOURCE_NOT_FOUND, a bad credential
    UNACCEPTABLE_CREDENTIAL, an unknown mechanism UNSUPPORTED_SASL_MECHANISM."""
    validate_username(name)
    named = [c.mechanism for c in upsertions] + list(deletions)
    for mechanism in named:
        if mechanism not in scram.HASHES:
            raise ControllerError(
                common_pb2.UNSUPPORTED_SASL_MECHANISM,
                f"user {name!r}: unknown SCRAM mechanism {mechanism}",
            )
    if len(set(named)) != len(named):
        raise ControllerError(
            common_pb2.DUPLICATE_RESOURCE,
            f"user {name!r}: a SCRAM mechanism appears more than once in the request",
        )
    current = image.scram_of(name)
    records = []
    for mechanism in deletions:
        if mechanism not in current:
            raise ControllerError(
                common_pb2.RESOURCE_NOT_FOUND,
                f"user {name!r} has no {scram.mechanism_name(mechanism)} credential to delete",
            )
        records.append(_remove_scram_record(name, mechanism))
    for one in upsertions:
        _check_scram(name, one)
        records.append(_scram_record(name, one))
    return records


def _check_scram(name: str, credential: ScramCredential) -> None:
    problem = credential.problem()
    if problem is None:
        return
    code = (
        common_pb2.UNSUPPORTED_SASL_MECHANISM
        if credential.mechanism not in scram.HASHES
        else common_pb2.UNACCEPTABLE_CREDENTIAL
    )
    raise ControllerError(code, f"user {name!r}: {problem}")


def _scram_record(name: str, credential: ScramCredential) -> Record:
    return Record(
        user_scram_credential=metadata_pb2.UserScramCredentialRecord(
            name=name, credential=scram.credential_to_proto(credential)
        )
    )


def _remove_scram_record(name: str, mechanism: int) -> Record:
    return Record(
        remove_user_scram_credential=metadata_pb2.RemoveUserScramCredentialRecord(
            name=name,
            mechanism=mechanism,  # type: ignore[arg-type]
        )
    )


def create_acl(image: MetadataImage, binding: AclBinding) -> list[Record]:
    problem = binding.problem()
    if problem:
        raise ControllerError(common_pb2.INVALID_REQUEST, f"invalid ACL: {problem}")
    if binding in image.acls:
        return []
    return [Record(acl=metadata_pb2.AclRecord(binding=binding_to_proto(binding)))]


def delete_acls(
    image: MetadataImage, selector: AclBindingFilter
) -> tuple[list[Record], list[AclBinding]]:
    deleted = sorted(b for b in image.acls if selector.matches(b))
    records = [
        Record(remove_acl=metadata_pb2.RemoveAclRecord(binding=binding_to_proto(b)))
        for b in deleted
    ]
    return records, deleted

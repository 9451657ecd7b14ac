"""The controller's decisions on users and ACLs: validate against the image, emit records.

Pure functions of the (speculative) image. A user's credential arrives already derived by the
client (salt, scrypt work factors, key), so no password ever reaches the controller; the work
factors are bounded here so that no stored credential can make a login expensive. Creating an
ACL that exists already succeeds without a record; deleting by filter removes every match.
"""

from __future__ import annotations

from strom.client.acl import AclBinding, AclBindingFilter, binding_to_proto
from strom.client.sasl import USERNAME_LENGTH_MAX, ScryptCredential, credential_to_proto
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


def upsert_user(image: MetadataImage, name: str, credential: ScryptCredential) -> list[Record]:
    validate_username(name)
    problem = credential.problem()
    if problem:
        raise ControllerError(common_pb2.UNACCEPTABLE_CREDENTIAL, f"user {name!r}: {problem}")
    return [
        Record(
            user_credential=metadata_pb2.UserCredentialRecord(
                name=name, credential=credential_to_proto(credential)
            )
        )
    ]


def delete_user(image: MetadataImage, name: str) -> list[Record]:
    if name not in image.users:
        raise ControllerError(common_pb2.RESOURCE_NOT_FOUND, f"user {name!r} does not exist")
    return [Record(remove_user_credential=metadata_pb2.RemoveUserCredentialRecord(name=name))]


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

"""`strom users ...` and `strom acls ...`, with Kafka's kafka-configs / kafka-acls flags as the
model, and the credentials every client command sends.

Credentials of the CLI itself come from the environment: STROM_SASL_USERNAME and
STROM_SASL_PASSWORD (and STROM_SASL_MECHANISM, default PLAIN). A new user's password is read
from stdin (`--password-stdin`) or a terminal prompt (`--password-prompt`), never from argv,
where `ps` and shell history would show it.

    strom users create alice --password-stdin
    strom acls add --allow-principal User:alice --operation Read --operation Describe --topic t
    strom acls add --allow-principal User:alice --operation Read --group g1
    strom acls add --deny-principal User:bob --operation Write --topic logs- \\
        --resource-pattern-type prefixed
    strom acls list --topic t
    strom acls remove --allow-principal User:alice --operation Read --topic t
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

USERNAME_ENV = "STROM_SASL_USERNAME"
PASSWORD_ENV = "STROM_SASL_PASSWORD"
MECHANISM_ENV = "STROM_SASL_MECHANISM"


class SecurityCommandError(Exception):
    """A user-facing failure of a users/acls command."""


def client_credentials() -> dict[str, Any]:
    """SDK options for the CLI's own SASL login, from the environment; {} when not set."""
    username = os.environ.get(USERNAME_ENV)
    if not username:
        return {}
    return {
        "sasl_username": username,
        "sasl_password": os.environ.get(PASSWORD_ENV, ""),
        "sasl_mechanism": os.environ.get(MECHANISM_ENV, "PLAIN"),
    }


def _admin(args: argparse.Namespace) -> Any:
    from strom.client.admin import Admin
    from strom.node.cli import (  # --command-config, then the environment
        CLI_BOOTSTRAP_TIMEOUT_MS,
        connection_options,
    )

    return Admin(
        args.bootstrap_server,
        bootstrap_timeout_ms=CLI_BOOTSTRAP_TIMEOUT_MS,
        **connection_options(args),
    )


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            raise SecurityCommandError("the passwords differ")
    if not password:
        raise SecurityCommandError("the password is empty")
    return password


def _users_create(args: argparse.Namespace) -> int:
    if not (args.password_stdin or args.password_prompt):
        raise SecurityCommandError(
            "give the password with --password-stdin or --password-prompt (never as an argument)"
        )
    password = _read_password(args)
    with _admin(args) as admin:
        admin.create_user(args.name, password)
    print(f"Created (or updated) user {args.name}.")
    return 0


def _users_delete(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.delete_user(args.name)
    print(f"Deleted user {args.name}.")
    return 0


def _users_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        users = admin.describe_users()
    if args.output == "json":
        from strom.node.cli import _print_json

        _print_json([{"name": u.name, "mechanism": u.mechanism, "n": u.n} for u in users])
    else:
        for user in users:
            print(f"{user.name}\t{user.mechanism}\tn={user.n}")
    return 0


# ---- ACLs --------------------------------------------------------------------------------


def _operations(names: list[str] | None) -> list[Any]:
    """Kafka's spellings (Read, ClusterAction, DescribeConfigs) or the enum's (CLUSTER_ACTION)."""
    from strom.client.acl import Operation

    by_name = {o.name.replace("_", ""): o for o in Operation if o != Operation.ANY}
    out = []
    for name in names or []:
        key = name.strip().upper().replace("_", "").replace("-", "")
        if key not in by_name:
            known = ", ".join(o.name.title().replace("_", "") for o in by_name.values())
            raise SecurityCommandError(f"unknown operation {name!r}; known: {known}")
        out.append(by_name[key])
    return out


def _resources(args: argparse.Namespace) -> list[tuple[Any, str]]:
    from strom.client.acl import CLUSTER_NAME, ResourceType

    resources = [(ResourceType.TOPIC, t) for t in args.topic or []]
    resources += [(ResourceType.GROUP, g) for g in args.group or []]
    if args.cluster:
        resources.append((ResourceType.CLUSTER, CLUSTER_NAME))
    return resources


def _pattern(args: argparse.Namespace, resource_type: Any) -> Any:
    from strom.client.acl import PatternType, ResourceType

    if resource_type == ResourceType.CLUSTER:
        return PatternType.LITERAL
    return PatternType[args.resource_pattern_type.upper()]


def _bindings(args: argparse.Namespace) -> list[Any]:
    from strom.client.acl import AclBinding, Permission

    resources = _resources(args)
    operations = _operations(args.operation)
    principals = [(p, Permission.ALLOW) for p in args.allow_principal or []]
    principals += [(p, Permission.DENY) for p in args.deny_principal or []]
    if not resources or not operations or not principals:
        raise SecurityCommandError(
            "name at least one resource (--topic, --group, --cluster), one --operation and one "
            "--allow-principal or --deny-principal"
        )
    return [
        AclBinding(rtype, name, _pattern(args, rtype), principal, "*", op, permission)
        for rtype, name in resources
        for op in operations
        for principal, permission in principals
    ]


def _acls_add(args: argparse.Namespace) -> int:
    bindings = _bindings(args)
    for binding in bindings:
        problem = binding.problem()
        if problem:
            raise SecurityCommandError(f"{describe_binding(binding)}: {problem}")
    with _admin(args) as admin:
        admin.create_acls(bindings)
    for binding in bindings:
        print(f"Added ACL: {describe_binding(binding)}")
    return 0


def _filters(args: argparse.Namespace) -> list[Any]:
    from strom.client.acl import (
        AclBindingFilter,
        Operation,
        PatternType,
        Permission,
        ResourceType,
    )

    resources: list[tuple[Any, str | None]] = list(_resources(args)) or [(ResourceType.ANY, None)]
    operations = _operations(args.operation) or [Operation.ANY]
    principals: list[tuple[str | None, Permission]] = [
        (p, Permission.ALLOW) for p in args.allow_principal or []
    ] + [(p, Permission.DENY) for p in args.deny_principal or []]
    principals += [(p, Permission.ANY) for p in getattr(args, "principal", None) or []]
    principals = principals or [(None, Permission.ANY)]
    kind = args.resource_pattern_type.upper()
    return [
        AclBindingFilter(
            resource_type=rtype,
            resource_name=name,
            pattern_type=PatternType.LITERAL
            if rtype == ResourceType.CLUSTER
            else PatternType[kind],
            principal=principal,
            operation=op,
            permission=permission,
        )
        for rtype, name in resources
        for op in operations
        for principal, permission in principals
    ]


def _acls_remove(args: argparse.Namespace) -> int:
    if not (
        args.topic or args.group or args.cluster or args.allow_principal or args.deny_principal
    ):
        raise SecurityCommandError(
            "name what to remove (a resource or a principal); `acls list` shows the ACLs"
        )
    with _admin(args) as admin:
        deleted = admin.delete_acls(_filters(args))
    for binding in deleted:
        print(f"Removed ACL: {describe_binding(binding)}")
    if not deleted:
        print("No ACL matched.")
    return 0


def _acls_list(args: argparse.Namespace) -> int:
    bindings: list[Any] = []
    with _admin(args) as admin:
        for selector in _filters(args):
            bindings += admin.describe_acls(selector)
    bindings = sorted(set(bindings))
    if args.output == "json":
        from strom.node.cli import _print_json

        _print_json(
            [
                {
                    "principal": b.principal,
                    "host": b.host,
                    "permission": b.permission.name,
                    "operation": b.operation.name,
                    "resource_type": b.resource_type.name,
                    "resource_name": b.resource_name,
                    "pattern_type": b.pattern_type.name,
                }
                for b in bindings
            ]
        )
    else:
        for binding in bindings:
            print(describe_binding(binding))
    return 0


def describe_binding(b: Any) -> str:
    return (
        f"{b.principal} {b.permission.name} {b.operation.name} on {b.resource_type.name} "
        f"{b.pattern_type.name.lower()} {b.resource_name!r} (host {b.host})"
    )


def add_commands(sub: Any, client: Callable[[argparse.ArgumentParser], Any]) -> None:
    users = sub.add_parser("users", help="SASL users (passwords stored as salted scrypt keys)")
    users_sub = users.add_subparsers(dest="action", required=True)
    create = client(users_sub.add_parser("create", help="create a user or change its password"))
    create.add_argument("name")
    how = create.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    how.add_argument("--password-prompt", action="store_true", help="prompt on the terminal")
    create.set_defaults(handler=_guard(_users_create))
    delete = client(users_sub.add_parser("delete"))
    delete.add_argument("name")
    delete.set_defaults(handler=_guard(_users_delete))
    client(users_sub.add_parser("list", help="names and mechanisms, never hashes")).set_defaults(
        handler=_guard(_users_list)
    )

    acls = sub.add_parser("acls", help="access control lists (Kafka's kafka-acls)")
    acls_sub = acls.add_subparsers(dest="action", required=True)
    for action, handler, text in (
        ("add", _acls_add, "add ACLs: every principal x operation x resource"),
        ("remove", _acls_remove, "remove every ACL matching the flags"),
        ("list", _acls_list, "list ACLs matching the flags (all by default)"),
    ):
        p = client(acls_sub.add_parser(action, help=text))
        p.add_argument("--allow-principal", action="append", metavar="User:NAME")
        p.add_argument("--deny-principal", action="append", metavar="User:NAME")
        if action == "list":
            p.add_argument("--principal", action="append", metavar="User:NAME")
        p.add_argument("--operation", action="append", metavar="OP",
                       help="All, Read, Write, Create, Delete, Alter, Describe, ClusterAction, "
                       "DescribeConfigs, AlterConfigs, IdempotentWrite")  # fmt: skip
        p.add_argument("--topic", action="append")
        p.add_argument("--group", action="append")
        p.add_argument("--cluster", action="store_true")
        p.add_argument(
            "--resource-pattern-type",
            choices=("literal", "prefixed") if action == "add" else
            ("literal", "prefixed", "match", "any"),
            default="literal" if action == "add" else "any",
        )  # fmt: skip
        p.set_defaults(handler=_guard(handler))


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (SecurityCommandError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run

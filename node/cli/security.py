"""`strom users ...` and `strom acls ...`, with Kafka's kafka-configs / kafka-acls flags as the
model, and `strom certs create`, throwaway TLS certificates for a cluster.

The CLI's own credentials are in common.py. A new user's password is read
from stdin (`--password-stdin`) or a terminal prompt (`--password-prompt`), never from argv,
where `ps` and shell history would show it.

    strom users create alice --password-stdin
    strom users alter alice --password-prompt --mechanism SCRAM-SHA-512 --iterations 8192
    strom acls add --allow-principal User:alice --operation Read --operation Describe --topic t
    strom acls add --allow-principal User:alice --operation Read --group g1
    strom acls add --allow-principal User:app --operation Write --transactional-id app-
    strom acls add --deny-principal User:bob --operation Write --topic logs- \\
        --resource-pattern-type prefixed
    strom acls list --topic t
    strom acls remove --allow-principal User:alice --operation Read --topic t
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from strom.client import scram
from strom.client.acl import (
    CLUSTER_NAME,
    AclBinding,
    AclBindingFilter,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from strom.node.certs import CLIENT_PROPERTIES, write_cluster_certs
from strom.node.cli.common import CommandError, Handler, admin_client, client_arguments
from strom.node.cli.output import print_json


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the passwords differ")
    if not password:
        raise CommandError("the password is empty")
    return password


def _users_create(args: argparse.Namespace) -> int:
    if not (args.password_stdin or args.password_prompt):
        raise CommandError(
            "give the password with --password-stdin or --password-prompt (never as an argument)"
        )
    if args.no_scram and args.mechanism:
        raise CommandError("--no-scram and --mechanism contradict each other")
    mechanisms = [] if args.no_scram else list(dict.fromkeys(args.mechanism or scram.MECHANISMS))
    if not scram.ITERATIONS_MIN <= args.iterations <= scram.ITERATIONS_MAX:
        raise CommandError(
            f"--iterations must be in {scram.ITERATIONS_MIN}..{scram.ITERATIONS_MAX} (Kafka's bounds)"
        )
    password = _read_password(args)
    with admin_client(args) as admin:
        admin.create_user(args.name, password, mechanisms, args.iterations)
    logins = ", ".join(["PLAIN", *mechanisms])
    print(f"Created (or updated) user {args.name}: logs in with {logins}.")
    return 0


def _users_delete(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        admin.delete_user(args.name)
    print(f"Deleted user {args.name}.")
    return 0


def _users_list(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        users = admin.describe_users()
    if args.output == "json":
        print_json([
            {"name": u.name, "mechanism": u.mechanism, "n": u.n,
             "scram": [{"mechanism": m, "iterations": i} for m, i in u.scram]}
            for u in users
        ])  # fmt: skip
    else:
        for user in users:
            scrypt = f"{user.mechanism} n={user.n}" if user.mechanism else "-"
            scram_text = " ".join(f"{m} iterations={i}" for m, i in user.scram) or "-"
            print(f"{user.name}\t{scrypt}\t{scram_text}")
    return 0


# ---- ACLs --------------------------------------------------------------------------------


def _operations(names: list[str] | None) -> list[Any]:
    """Kafka's spellings (Read, ClusterAction, DescribeConfigs) or the enum's (CLUSTER_ACTION)."""
    by_name = {o.name.replace("_", ""): o for o in Operation if o != Operation.ANY}
    out = []
    for name in names or []:
        key = name.strip().upper().replace("_", "").replace("-", "")
        if key not in by_name:
            known = ", ".join(o.name.title().replace("_", "") for o in by_name.values())
            raise CommandError(f"unknown operation {name!r}; known: {known}")
        out.append(by_name[key])
    return out


def _resources(args: argparse.Namespace) -> list[tuple[Any, str]]:
    resources = [(ResourceType.TOPIC, t) for t in args.topic or []]
    resources += [(ResourceType.GROUP, g) for g in args.group or []]
    resources += [(ResourceType.TRANSACTIONAL_ID, t) for t in args.transactional_id or []]
    if args.cluster:
        resources.append((ResourceType.CLUSTER, CLUSTER_NAME))
    return resources


def _pattern(args: argparse.Namespace, resource_type: Any) -> Any:
    if resource_type == ResourceType.CLUSTER:
        return PatternType.LITERAL
    return PatternType[args.resource_pattern_type.upper()]


def _bindings(args: argparse.Namespace) -> list[Any]:
    resources = _resources(args)
    operations = _operations(args.operation)
    principals = [(p, Permission.ALLOW) for p in args.allow_principal or []]
    principals += [(p, Permission.DENY) for p in args.deny_principal or []]
    if not resources or not operations or not principals:
        raise CommandError(
            "name at least one resource (--topic, --group, --transactional-id, --cluster), one "
            "--operation and one "
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
            raise CommandError(f"{describe_binding(binding)}: {problem}")
    with admin_client(args) as admin:
        admin.create_acls(bindings)
    for binding in bindings:
        print(f"Added ACL: {describe_binding(binding)}")
    return 0


def _filters(args: argparse.Namespace) -> list[Any]:
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
        raise CommandError(
            "name what to remove (a resource or a principal); `acls list` shows the ACLs"
        )
    with admin_client(args) as admin:
        deleted = admin.delete_acls(_filters(args))
    for binding in deleted:
        print(f"Removed ACL: {describe_binding(binding)}")
    if not deleted:
        print("No ACL matched.")
    return 0


def _acls_list(args: argparse.Namespace) -> int:
    bindings: list[Any] = []
    with admin_client(args) as admin:
        for selector in _filters(args):
            bindings += admin.describe_acls(selector)
    bindings = sorted(set(bindings))
    if args.output == "json":
        print_json(
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


# ---- certificates ------------------------------------------------------------------------


def _certs_create(args: argparse.Namespace) -> int:
    """A throwaway CA and certificates for a cluster (what `cluster up --tls` does for a local
    one), e.g. for the docker-compose TLS variant."""
    out = Path(args.out)
    if (out / "ca.key").exists():
        raise CommandError(f"{out} already holds a CA (ca.key): remove it or pick another --out")
    nodes: dict[str, list[str]] = {}
    for item in args.node or []:
        name, _, hosts = item.partition("=")
        if not name:
            raise CommandError(f"--node expects NAME[=HOST,HOST...], got {item!r}")
        nodes[name] = [name, *(h.strip() for h in hosts.split(",") if h.strip())]
    if not nodes:
        raise CommandError("name at least one node: --node NAME[=HOST,...]")
    clients = args.client or ["strom-admin"]
    files = write_cluster_certs(out, nodes, clients)
    if args.output == "json":
        print_json(
            {
                "ca": str(out / "ca.crt"),
                "identities": {name: str(f.certificate) for name, f in files.items()},
                "command_config": str(out / CLIENT_PROPERTIES),
            }
        )
        return 0
    print(f"CA: {out / 'ca.crt'} (its key ca.key stays in {out}: keep the folder private)")
    for name, identity in files.items():
        role = "node" if name in nodes else "client"
        print(f"{role} {name}: {identity.certificate}, {identity.key}")
    print(f"Clients: --command-config {out / CLIENT_PROPERTIES}")
    return 0


def add_commands(sub: Any) -> None:
    users = sub.add_parser(
        "users", help="SASL users (salted scrypt keys, and SCRAM credentials for Kafka clients)"
    )
    users_sub = users.add_subparsers(dest="action", required=True)
    create = client_arguments(
        users_sub.add_parser(
            "create", aliases=["alter"], help="create a user or change its password"
        )
    )
    create.add_argument("name")
    how = create.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    how.add_argument("--password-prompt", action="store_true", help="prompt on the terminal")
    create.add_argument(
        "--mechanism", action="append", choices=tuple(scram.MECHANISMS),
        help="a SASL/SCRAM mechanism to derive a credential for, for Kafka clients (repeatable; "
        "default: both). The user always logs in with PLAIN too; a mechanism not named loses "
        "its old credential",
    )  # fmt: skip
    create.add_argument(
        "--iterations", type=int, default=scram.ITERATIONS_DEFAULT,
        help=f"SCRAM iteration count, {scram.ITERATIONS_MIN}..{scram.ITERATIONS_MAX}",
    )  # fmt: skip
    create.add_argument(
        "--no-scram", action="store_true", help="no SCRAM credentials (PLAIN logins only)"
    )
    create.set_defaults(handler=_guard(_users_create))
    delete = client_arguments(users_sub.add_parser("delete"))
    delete.add_argument("name")
    delete.set_defaults(handler=_guard(_users_delete))
    client_arguments(
        users_sub.add_parser(
            "list", aliases=["describe"], help="names and mechanisms, never hashes"
        )
    ).set_defaults(handler=_guard(_users_list))

    acls = sub.add_parser("acls", help="access control lists (Kafka's kafka-acls)")
    acls_sub = acls.add_subparsers(dest="action", required=True)
    for action, handler, text in (
        ("add", _acls_add, "add ACLs: every principal x operation x resource"),
        ("remove", _acls_remove, "remove every ACL matching the flags"),
        ("list", _acls_list, "list ACLs matching the flags (all by default)"),
    ):
        p = client_arguments(acls_sub.add_parser(action, help=text))
        p.add_argument("--allow-principal", action="append", metavar="User:NAME")
        p.add_argument("--deny-principal", action="append", metavar="User:NAME")
        if action == "list":
            p.add_argument("--principal", action="append", metavar="User:NAME")
        p.add_argument("--operation", action="append", metavar="OP",
                       help="All, Read, Write, Create, Delete, Alter, Describe, ClusterAction, "
                       "DescribeConfigs, AlterConfigs, IdempotentWrite")  # fmt: skip
        p.add_argument("--topic", action="append")
        p.add_argument("--group", action="append")
        p.add_argument(
            "--transactional-id",
            action="append",
            metavar="ID",
            help="a transactional producer's id (Write: use transactions; Describe)",
        )
        p.add_argument("--cluster", action="store_true")
        p.add_argument(
            "--resource-pattern-type",
            choices=("literal", "prefixed") if action == "add" else
            ("literal", "prefixed", "match", "any"),
            default="literal" if action == "add" else "any",
        )  # fmt: skip
        p.set_defaults(handler=_guard(handler))


def _guard(handler: Handler) -> Handler:
    """A binding the ACL types refuse (ValueError) is reported as the user's error too."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CommandError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def add_certs_commands(sub: Any) -> None:
    certs = sub.add_parser("certs", help="throwaway TLS certificates").add_subparsers(
        dest="action", required=True
    )
    certs_create = certs.add_parser(
        "create", help="a new CA, a certificate per node and per client, properties files"
    )
    certs_create.add_argument("--out", required=True, help="folder to write (must hold no CA)")
    certs_create.add_argument(
        "--node",
        action="append",
        metavar="NAME[=HOST,...]",
        help="a node certificate (server and client use) for NAME and the hosts it is dialled "
        "by; localhost and 127.0.0.1 are always included. Repeat per node",
    )
    certs_create.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="a client certificate with CN=NAME (default: strom-admin). Repeatable",
    )
    certs_create.add_argument("--output", choices=("text", "json"), default="text")
    certs_create.set_defaults(handler=_certs_create)

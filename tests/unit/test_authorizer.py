"""The authorizer's decisions (Kafka's ACL model): examples, then properties against a naive
model that scans every binding (the real one indexes literal names and prefixes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.client.acl import (
    CLUSTER_NAME,
    WILDCARD,
    WILDCARD_PRINCIPAL,
    AclBinding,
    AclBindingFilter,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    pattern_applies,
)
from strom.node.security.authorizer import (
    IMPLIED_BY,
    Authorizer,
    AuthorizerSettings,
    parse_super_users,
)

ON = AuthorizerSettings(enabled=True, super_users=frozenset({"User:admin"}))
TOPIC, GROUP, CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = Permission.ALLOW, Permission.DENY


def acl(
    principal: str,
    op: Operation,
    name: str,
    permission: Permission = ALLOW,
    rtype: ResourceType = TOPIC,
    pattern: PatternType = LIT,
) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, "*", op, permission)


def decide(bindings: list[AclBinding], principal: str, op: Operation, name: str,
           rtype: ResourceType = TOPIC, settings: AuthorizerSettings = ON) -> bool:  # fmt: skip
    return Authorizer(settings, bindings).authorize(principal, op, rtype, name)


def test_off_allows_everything() -> None:
    assert decide([], "User:x", Operation.WRITE, "t", settings=AuthorizerSettings())


def test_no_acl_found_is_closed_by_default_and_open_when_configured() -> None:
    assert not decide([], "User:alice", Operation.READ, "t")
    # An ACL for another topic does not count as "found" for this one.
    assert not decide([acl("User:bob", Operation.READ, "other")], "User:alice", Operation.READ, "t")
    loose = AuthorizerSettings(enabled=True, allow_everyone_if_no_acl_found=True)
    assert decide([], "User:alice", Operation.READ, "t", settings=loose)
    # Once any ACL names the topic, the no-ACL rule no longer applies, for anyone.
    assert not decide(
        [acl("User:bob", Operation.READ, "t")], "User:alice", Operation.READ, "t", settings=loose
    )


def test_super_user_beats_deny() -> None:
    bindings = [acl("User:admin", Operation.ALL, "t", DENY)]
    assert decide(bindings, "User:admin", Operation.WRITE, "t")


def test_deny_wins_over_allow() -> None:
    bindings = [acl("User:alice", Operation.ALL, "pay", ALLOW, pattern=PRE),
                acl("User:alice", Operation.WRITE, "payments", DENY)]  # fmt: skip
    assert not decide(bindings, "User:alice", Operation.WRITE, "payments")
    assert decide(bindings, "User:alice", Operation.READ, "payments")
    assert decide(bindings, "User:alice", Operation.WRITE, "pay-other")


def test_wildcards() -> None:
    everyone = [acl(WILDCARD_PRINCIPAL, Operation.READ, WILDCARD)]
    assert decide(everyone, "User:anyone", Operation.READ, "any-topic")
    assert not decide(everyone, "User:anyone", Operation.WRITE, "any-topic")
    deny_all = [*everyone, acl(WILDCARD_PRINCIPAL, Operation.ALL, "secret", DENY)]
    assert not decide(deny_all, "User:anyone", Operation.READ, "secret")


def test_implied_operations_apply_to_allow_only() -> None:
    for op in (Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER):
        assert decide([acl("User:a", op, "t")], "User:a", Operation.DESCRIBE, "t")
    assert not decide([acl("User:a", Operation.CREATE, "t")], "User:a", Operation.DESCRIBE, "t")
    configs = [acl("User:a", Operation.ALTER_CONFIGS, "t")]
    assert decide(configs, "User:a", Operation.DESCRIBE_CONFIGS, "t")
    # Denying READ does not deny DESCRIBE (Kafka).
    mixed = [acl("User:a", Operation.ALL, "t"), acl("User:a", Operation.READ, "t", DENY)]
    assert decide(mixed, "User:a", Operation.DESCRIBE, "t")
    assert not decide(mixed, "User:a", Operation.READ, "t")


def test_resource_types_are_separate() -> None:
    bindings = [acl("User:a", Operation.READ, "x", rtype=GROUP)]
    assert decide(bindings, "User:a", Operation.READ, "x", GROUP)
    assert not decide(bindings, "User:a", Operation.READ, "x", TOPIC)
    cluster = [acl("User:n", Operation.CLUSTER_ACTION, CLUSTER_NAME, rtype=CLUSTER)]
    assert decide(cluster, "User:n", Operation.CLUSTER_ACTION, CLUSTER_NAME, CLUSTER)


def test_authorize_any_for_idempotent_producers() -> None:
    authz = Authorizer(ON, [acl("User:a", Operation.WRITE, "logs-", pattern=PRE)])
    assert authz.authorize_any("User:a", Operation.WRITE, TOPIC)
    assert not authz.authorize_any("User:b", Operation.WRITE, TOPIC)
    covered = Authorizer(ON, [acl("User:a", Operation.WRITE, "logs-x", pattern=PRE),
                              acl("User:a", Operation.WRITE, "logs-", DENY, pattern=PRE)])  # fmt: skip
    assert not covered.authorize_any("User:a", Operation.WRITE, TOPIC)
    # A deny on one literal does not close a wildcard allow.
    partly = Authorizer(ON, [acl("User:a", Operation.WRITE, WILDCARD),
                             acl("User:a", Operation.WRITE, "x", DENY, pattern=PRE)])  # fmt: skip
    assert partly.authorize_any("User:a", Operation.WRITE, TOPIC)


def test_binding_validation() -> None:
    assert acl("User:a", Operation.READ, "t").problem() is None
    assert "principal" in (acl("alice", Operation.READ, "t").problem() or "")
    assert acl("User:a", Operation.ANY, "t").problem()
    assert acl("User:a", Operation.READ, "").problem()
    assert AclBinding(TOPIC, "t", LIT, "User:a", "10.0.0.1", Operation.READ, ALLOW).problem()
    assert acl("User:a", Operation.ALTER, "other", rtype=CLUSTER).problem()
    assert acl("User:a", Operation.ALTER, CLUSTER_NAME, rtype=CLUSTER).problem() is None


def test_parse_super_users() -> None:
    assert parse_super_users("User:admin;User:node") == {"User:admin", "User:node"}
    assert parse_super_users(" User:a , User:b ") == {"User:a", "User:b"}
    assert parse_super_users("") == frozenset()
    with pytest.raises(ValueError):
        parse_super_users("admin")


def test_filters() -> None:
    b = acl("User:a", Operation.READ, "logs-", pattern=PRE)
    assert AclBindingFilter().matches(b)
    assert AclBindingFilter(resource_type=TOPIC, principal="User:a").matches(b)
    assert not AclBindingFilter(resource_type=GROUP).matches(b)
    assert not AclBindingFilter(resource_name="logs-", pattern_type=LIT).matches(b)
    assert AclBindingFilter(resource_name="logs-", pattern_type=PRE).matches(b)
    assert AclBindingFilter(resource_name="logs-app", pattern_type=PatternType.MATCH).matches(b)
    assert not AclBindingFilter(resource_name="log", pattern_type=PatternType.MATCH).matches(b)
    assert not AclBindingFilter(permission=DENY).matches(b)


# ---- properties against a naive model ---------------------------------------------------------

PRINCIPALS = ["User:a", "User:b", WILDCARD_PRINCIPAL]
NAMES = ["t", "tx", "t1", "u", WILDCARD]
CONCRETE_OPS = [o for o in Operation if o != Operation.ANY]

bindings_st = st.builds(
    AclBinding,
    st.sampled_from([TOPIC, GROUP]),
    st.sampled_from(NAMES),
    st.sampled_from([LIT, PRE]),
    st.sampled_from(PRINCIPALS),
    st.just("*"),
    st.sampled_from(CONCRETE_OPS),
    st.sampled_from([ALLOW, DENY]),
)


def model(bindings: set[AclBinding], settings: AuthorizerSettings, principal: str,
          op: Operation, rtype: ResourceType, name: str) -> bool:  # fmt: skip
    """Kafka's rules, written as plainly as possible: scan everything."""
    if not settings.enabled or principal in settings.super_users:
        return True
    found = [b for b in bindings if b.resource_type == rtype and pattern_applies(b, name)]
    if not found:
        return settings.allow_everyone_if_no_acl_found
    mine = [b for b in found if b.principal in (principal, WILDCARD_PRINCIPAL)]
    if any(b.permission == DENY and b.operation in (op, Operation.ALL) for b in mine):
        return False
    ops = {op, Operation.ALL, *IMPLIED_BY.get(op, ())}
    return any(b.permission == ALLOW and b.operation in ops for b in mine)


actions = st.tuples(
    st.sampled_from(["User:a", "User:b", "User:c", "User:admin"]),
    st.sampled_from(CONCRETE_OPS[1:]),  # an action names a concrete operation, never ALL
    st.sampled_from([TOPIC, GROUP]),
    st.sampled_from(["t", "tx", "t1", "u", "v", WILDCARD]),
)


@settings(max_examples=100, deadline=None)
@given(st.sets(bindings_st, max_size=12), st.booleans(), st.lists(actions, max_size=10))
def test_matches_the_naive_model(
    bindings: set[AclBinding], loose: bool, checks: list[tuple[str, Operation, ResourceType, str]]
) -> None:
    config = AuthorizerSettings(True, frozenset({"User:admin"}), loose)
    authz = Authorizer(config, bindings)
    for principal, op, rtype, name in checks:
        assert authz.authorize(principal, op, rtype, name) == model(
            bindings, config, principal, op, rtype, name
        )


@settings(max_examples=50, deadline=None)
@given(st.sets(bindings_st, max_size=10), actions)
def test_a_matching_deny_always_wins(
    bindings: set[AclBinding], action: tuple[str, Operation, ResourceType, str]
) -> None:
    principal, op, rtype, name = action
    deny = AclBinding(rtype, name, LIT, principal, "*", op, DENY)
    decided = Authorizer(ON, bindings | {deny}).authorize(principal, op, rtype, name)
    assert decided == (principal == "User:admin")


@settings(max_examples=50, deadline=None)
@given(st.sets(bindings_st, max_size=10), bindings_st, actions)
def test_adding_an_allow_never_revokes(
    bindings: set[AclBinding], extra: AclBinding, action: tuple[str, Operation, ResourceType, str]
) -> None:
    """With allow.everyone.if.no.acl.found off, an ALLOW binding only ever grants."""
    allow = AclBinding(extra.resource_type, extra.resource_name, extra.pattern_type,
                       extra.principal, "*", extra.operation, ALLOW)  # fmt: skip
    before = Authorizer(ON, bindings).authorize(*action)
    after = Authorizer(ON, bindings | {allow}).authorize(*action)
    assert after or not before


@settings(max_examples=50, deadline=None)
@given(st.sets(bindings_st, max_size=10))
def test_filter_from_a_binding_finds_exactly_it(bindings: set[AclBinding]) -> None:
    for b in bindings:
        exact = AclBindingFilter(b.resource_type, b.resource_name, b.pattern_type, b.principal,
                                 b.host, b.operation, b.permission)  # fmt: skip
        assert [x for x in bindings if exact.matches(x)] == [b]

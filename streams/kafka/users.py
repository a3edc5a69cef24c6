"""Principals by role on the local broker: a SCRAM credential and the ACLs of its role.

`ioacct kafka user add NAME --role ROLE` writes a random password to
``<broker home>/secrets/NAME.password`` (0600), gives NAME its SCRAM-SHA-512 credential
and exactly the ACLs of ROLE, through Kafka's own admin tools logged in as the local
admin. What each role may do is :data:`ROLE_ACLS` (docs/access.md).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from streams.config import Settings
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from streams.kafka import tls
from streams.kafka.cluster import LocalCluster
from streams.kafka.local import LocalBroker

ROLES = ("admin", "worker", "hypervisor", "billing-reader", "monitoring-reader")


@dataclass(frozen=True)
class Grant:
    """One ACL: operations on a resource (type, name, literal or prefixed pattern)."""

    resource: str  # "topic", "group" or "cluster"
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False
    deny: bool = False  # a DENY wins over any ALLOW: carves a topic out of a prefix


def role_grants(role: str, settings: Settings) -> list[Grant]:
    """The ACLs of ``role`` for the pipeline of ``settings`` (its topic prefix)."""
    s = settings
    if role == "admin":
        return []  # a super user of the local broker: every operation
    if role == "hypervisor":  # raw events and its own dead letters (bad input lines)
        return [Grant("topic", s.raw_topic, ("Write", "Describe")),
                Grant("topic", s.dlq_topic, ("Write", "Describe")),
                Grant("cluster", "kafka-cluster", ("IdempotentWrite",))]
    if role == "worker":  # everything of the pipeline but the tokens and registry (read only)
        return [Grant("topic", f"{s.topic_prefix}.", ("Read", "Write", "Describe"), True),
                Grant("topic", f"{s.app_id}-", ("Read", "Write", "Describe", "Create"), True),
                Grant("topic", s.tokens_topic, ("Write",), deny=True),
                Grant("topic", s.registry_topic, ("Write",), deny=True),
                Grant("group", s.app_id, ("Read", "Describe")),
                Grant("cluster", "kafka-cluster", ("IdempotentWrite",))]
    if role == "billing-reader":
        return [Grant("topic", s.billing_topic, ("Read", "Describe"))]
    if role == "monitoring-reader":
        return [Grant("topic", s.monitoring_topic, ("Read", "Describe"))] + [
            Grant("topic", s.stats_topic(length_ns), ("Read", "Describe"))
            for length_ns in WINDOW_LENGTHS_NS]
    raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")


def _tool(cluster: LocalCluster, main_class: str, *args: str) -> None:
    broker: LocalBroker = cluster.nodes[0]
    command = broker.java(main_class, "--bootstrap-server", cluster.bootstrap,
                          "--command-config", str(tls.admin_client_properties(cluster.home)),
                          *args, heap="-Xmx256m")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{main_class} failed: {result.stdout}{result.stderr}")


def _acl_args(user: str, grant: Grant) -> list[str]:
    args = ["--add", "--deny-principal" if grant.deny else "--allow-principal", f"User:{user}"]
    for operation in grant.operations:
        args += ["--operation", operation]
    if grant.resource == "cluster":
        return args + ["--cluster"]
    args += [f"--{grant.resource}", grant.name]
    return args + (["--resource-pattern-type", "prefixed"] if grant.prefixed else [])


def add_user(settings: Settings, name: str, role: str) -> str:
    """Create (or update) ``name`` with ``role``'s ACLs; returns its password file."""
    cluster = LocalCluster.from_settings(settings)
    if not cluster.nodes[0].secure:
        raise RuntimeError("the local broker runs without security (IOACCT_KAFKA_SECURITY="
                           "PLAINTEXT): there are no users to add")
    grants = role_grants(role, settings)
    password = tls.secret(cluster.home, name)
    _tool(cluster, "kafka.admin.ConfigCommand", "--alter", "--entity-type", "users",
          "--entity-name", name, "--add-config", f"SCRAM-SHA-512=[password={password}]")
    for grant in grants:
        _tool(cluster, "kafka.admin.AclCommand", *_acl_args(name, grant))
    return str(cluster.home / "secrets" / f"{name}.password")


def cli_user(rest: list[str], role: str | None, settings: Settings) -> int:
    """`ioacct kafka user add NAME --role ROLE`: a SCRAM principal with its role's ACLs."""
    if len(rest) != 2 or rest[0] != "add" or role is None:
        print("usage: ioacct kafka user add NAME --role " + "|".join(ROLES), file=sys.stderr)
        return 2
    try:
        path = add_user(settings, rest[1], role)
    except (RuntimeError, ValueError) as exc:
        print(f"ioacct kafka user add: {exc}", file=sys.stderr)
        return 1
    print(f"user {rest[1]} ({role}): password in {path}")
    return 0

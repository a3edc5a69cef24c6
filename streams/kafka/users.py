"""Principals by role on the local broker: a SCRAM credential and the ACLs of its role.

`ioacct kafka user add NAME --role ROLE` writes a random password to
``<broker home>/secrets/NAME.password`` (0600), gives NAME its SCRAM-SHA-512 credential
and exactly the ACLs of ROLE, through Kafka's own admin tools logged in as the local
admin. What each role may do is :data:`ROLE_ACLS` (docs/access.md).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from streams.config import Settings
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from streams.kafka import tls
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


def _tool(broker: LocalBroker, main_class: str, *args: str) -> None:
    command = broker.java(main_class, "--bootstrap-server", broker.bootstrap,
                          "--command-config", str(tls.admin_client_properties(broker.home)),
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
    broker = LocalBroker.from_settings(settings)
    if not broker.secure:
        raise RuntimeError("the local broker runs without security (IOACCT_KAFKA_SECURITY="
                           "PLAINTEXT): there are no users to add")
    grants = role_grants(role, settings)
    password = tls.secret(broker.home, name)
    _tool(broker, "kafka.admin.ConfigCommand", "--alter", "--entity-type", "users",
          "--entity-name", name, "--add-config", f"SCRAM-SHA-512=[password={password}]")
    for grant in grants:
        _tool(broker, "kafka.admin.AclCommand", *_acl_args(name, grant))
    return str(broker.home / "secrets" / f"{name}.password")

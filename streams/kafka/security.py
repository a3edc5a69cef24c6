"""How every client of the project authenticates to Kafka, from the settings alone.

``IOACCT_KAFKA_SECURITY=SASL_SSL`` makes each client (the SDK, the worker's faust app,
the CLI verbs, the audit, tail, the bench) log in as ``IOACCT_KAFKA_USER`` with the
password in ``IOACCT_KAFKA_PASSWORD_FILE`` over TLS checked against ``IOACCT_KAFKA_CA_FILE``,
so the same code runs against the local broker and any secured cluster.
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context

from streams.config import Settings

PROTOCOLS = ("PLAINTEXT", "SASL_SSL")


class SecurityError(ValueError):
    """The security settings cannot work; the message says which and why."""


def _protocol(settings: Settings) -> str:
    protocol = settings.kafka_security.upper()
    if protocol not in PROTOCOLS:
        raise SecurityError(f"IOACCT_KAFKA_SECURITY={settings.kafka_security!r}: "
                            f"use one of {', '.join(PROTOCOLS)}")
    return protocol


def password(settings: Settings) -> str:
    """``kafka_user``'s password, read from its file (one line)."""
    path = settings.kafka_password_path()
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SecurityError(f"cannot read the Kafka password of {settings.kafka_user!r} "
                            f"from {path} (IOACCT_KAFKA_PASSWORD_FILE): {exc}") from exc


@lru_cache(maxsize=8)
def _ssl_context(ca_path: Path) -> ssl.SSLContext:
    if not ca_path.is_file():
        raise SecurityError(f"no CA certificate at {ca_path} (IOACCT_KAFKA_CA_FILE)")
    return create_ssl_context(cafile=str(ca_path))


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: bootstrap servers and security."""
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers}
    if _protocol(settings) == "SASL_SSL":
        kwargs.update(
            security_protocol="SASL_SSL", sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_user, sasl_plain_password=password(settings),
            ssl_context=_ssl_context(settings.kafka_ca_path()))
    return kwargs


def faust_credentials(settings: Settings) -> Any:
    """faust's ``broker_credentials`` for the same login (None: plaintext)."""
    if _protocol(settings) != "SASL_SSL":
        return None
    import faust  # lazily: the SDK and the CLI's Kafka verbs run without faust

    return faust.SASLCredentials(
        username=settings.kafka_user, password=password(settings),
        ssl_context=_ssl_context(settings.kafka_ca_path()),
        mechanism=settings.kafka_sasl_mechanism)

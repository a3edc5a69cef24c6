"""HTTPS for a worker's web server (settings ``web_cert``, ``web_key``): the server's
context, and the context a worker checks another worker's certificate with."""

from __future__ import annotations

import ssl

from streams.config import Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The web server's TLS context, or None to serve plain HTTP (no certificate set)."""
    if not settings.web_cert and not settings.web_key:
        return None
    if not (settings.web_cert and settings.web_key):
        raise ValueError("HTTPS needs both IOACCT_WEB_CERT and IOACCT_WEB_KEY")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.web_cert, settings.web_key)
    return context


def caller_context(settings: Settings, ca_file: str | None = None) -> ssl.SSLContext:
    """How a client of the workers (``ioacct query``, ``ioacct run``) checks a worker's
    HTTPS certificate: the system's CAs, plus ``ca_file`` (else IOACCT_WEB_CA_FILE, else
    this host's own IOACCT_WEB_CERT), so a self-signed worker certificate can be trusted.
    A file that cannot be read: OSError or ssl.SSLError, naming it."""
    context = ssl.create_default_context()
    trusted = ca_file or settings.web_ca_file or settings.web_cert
    if trusted:
        context.load_verify_locations(trusted)
    return context


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """How a worker checks its peers: the system's CAs, plus our own certificate (a
    self-signed one is then trusted; every worker of a group serves one from the same CA or
    the same certificate). None for plain HTTP."""
    if not settings.web_cert:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(settings.web_cert)
    return context

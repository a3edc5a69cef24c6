"""The local broker's secrets: a CA and a broker certificate made with the JDK's keytool,
and the passwords of its SCRAM users, all under ``<broker home>/`` (0600 files).

Made once, on the first secured start; a client trusts ``tls/ca.pem`` and reads its
password from ``secrets/<user>.password`` (streams.kafka.security).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

SAN = "SAN=ip:127.0.0.1,dns:localhost"
VALIDITY_DAYS = "825"


class TlsError(RuntimeError):
    """keytool could not make the local broker's certificates; the message says why."""


def secret(home: Path, name: str) -> str:
    """The password ``secrets/<name>.password`` holds, made (random) the first time."""
    path = home / "secrets" / f"{name}.password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def _keytool(*args: str) -> None:
    result = subprocess.run(["keytool", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TlsError(f"keytool {args[0]} failed: {result.stdout}{result.stderr}")


def ensure_certificates(home: Path) -> Path:
    """The TLS directory with ca.pem, broker.p12 (key + chain) and trust.p12 (the CA)."""
    tls = home / "tls"
    if (tls / "trust.p12").exists():
        return tls
    tls.mkdir(parents=True, exist_ok=True)
    ca_pass, store_pass = secret(home, "tls-ca"), secret(home, "tls-store")
    ca, broker = str(tls / "ca.p12"), str(tls / "broker.p12")
    _keytool("-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
             "-dname", "CN=ioacct-local-ca", "-ext", "bc:c", "-validity", "3650",
             "-keystore", ca, "-storetype", "PKCS12", "-storepass", ca_pass)
    _keytool("-exportcert", "-alias", "ca", "-keystore", ca, "-storepass", ca_pass, "-rfc",
             "-file", str(tls / "ca.pem"))
    _keytool("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
             "-dname", "CN=localhost", "-ext", SAN, "-validity", VALIDITY_DAYS,
             "-keystore", broker, "-storetype", "PKCS12", "-storepass", store_pass)
    _keytool("-certreq", "-alias", "broker", "-keystore", broker, "-storepass", store_pass,
             "-file", str(tls / "broker.csr"))
    _keytool("-gencert", "-alias", "ca", "-keystore", ca, "-storepass", ca_pass,
             "-infile", str(tls / "broker.csr"), "-outfile", str(tls / "broker.pem"), "-rfc",
             "-ext", SAN, "-validity", VALIDITY_DAYS)
    for alias, cert in (("ca", "ca.pem"), ("broker", "broker.pem")):
        _keytool("-importcert", "-alias", alias, "-file", str(tls / cert), "-keystore", broker,
                 "-storepass", store_pass, "-noprompt")
    _keytool("-importcert", "-alias", "ca", "-file", str(tls / "ca.pem"), "-keystore",
             str(tls / "trust.p12"), "-storetype", "PKCS12", "-storepass", store_pass,
             "-noprompt")
    return tls


def admin_client_properties(home: Path) -> Path:
    """A Java client config that logs in as the local admin (for Kafka's own tools)."""
    path = home / "secrets" / "admin.properties"
    tls = ensure_certificates(home)
    text = (
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{secret(home, "admin")}";\n'
        f"ssl.truststore.location={tls / 'trust.p12'}\nssl.truststore.type=PKCS12\n"
        f"ssl.truststore.password={secret(home, 'tls-store')}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path

"""Two workers serving HTTPS with a self-signed certificate (IOACCT_WEB_CERT/KEY): a
query to one of them for a volume the other owns is forwarded over HTTPS to the owner
(streams/api/routing.py) and answered, end to end; `ioacct query` trusts the worker's
certificate only when given it (--ca-file)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.config import Settings
from streams.core.partitioning import default_partition
from tests.hostile import GOOD

from .harness import WorkerProcess, create_token, ioacct, running_workers, wait_until

pytestmark = pytest.mark.integration
TENANT = "tenant-https"
VOLUMES = [f"vol-https-{n}" for n in range(16)]
READS = 3


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "web-cert.pem", directory / "web-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def https(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Settings, Path, list[WorkerProcess]]]:
    tmp = Path(tmp_path_factory.mktemp("https2"))
    cert, key = _self_signed(tmp)
    settings = pipeline_settings.with_overrides(web_cert=str(cert), web_key=str(key))
    with running_workers(settings, tmp, 2) as workers:
        yield settings, cert, workers


def test_a_query_for_the_other_workers_volume_is_forwarded_over_https(
    https: tuple[Settings, Path, list[WorkerProcess]], tmp_path: Path,
) -> None:
    settings, cert, workers = https
    events = [{**GOOD, "volume_id": v, "tenant_id": TENANT, "offset": 4096 * k}
              for v in VOLUMES for k in range(READS)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    sent = ioacct(settings, "produce", "--jsonl", str(path))
    assert sent.returncode == 0, sent.stderr
    token = create_token(settings, "--tenant", TENANT)
    asked = workers[0]
    mine = set(asked.get("/status")[1]["assigned_partitions"])
    theirs = [v for v in VOLUMES
              if default_partition(v.encode(), settings.partitions) not in mine]
    assert theirs and len(theirs) < len(VOLUMES)  # both workers own some
    # A client of its own: no IOACCT_WEB_CERT here, the certificate only by --ca-file.
    client = settings.with_overrides(web_cert="", web_key="")

    def query(volume: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return ioacct(client, "query", "counters", volume, "--url", asked.url,
                      "--token", token, *extra)

    def counted(volume: str) -> dict[str, int] | None:
        answer = query(volume, "--ca-file", str(cert))
        if answer.returncode != 0:
            return None
        counters: dict[str, int] = orjson.loads(answer.stdout)
        return counters if counters["read_ios"] == READS else None

    for volume in VOLUMES:
        counters = wait_until(lambda v=volume: counted(v), 120,
                              f"{volume} counted and answered over HTTPS", workers)
        assert counters["volume_id"] == volume and counters["tenant_id"] == TENANT
    untrusted = query(theirs[0])
    assert untrusted.returncode == 1
    assert "certificate" in untrusted.stderr and "--ca-file" in untrusted.stderr, untrusted.stderr
    missing = query(theirs[0], "--ca-file", str(tmp_path / "nope.pem"))
    assert missing.returncode == 1 and "cannot use the CA file" in missing.stderr

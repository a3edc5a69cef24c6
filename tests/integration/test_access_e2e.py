"""Access control on the real broker with two workers: tokens, tenants, routing, revocation.

Two tenants own volumes spread over both workers' partitions. Every endpoint refuses a
missing or wrong token; each tenant sees all of its own volumes and none of the other's,
whichever worker it asks (half of the volume requests are routed to the other worker),
and another tenant's volume answers byte for byte like a volume that does not exist,
also for crafted ids; revoking a token shuts it out of both workers without a restart.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.config import Settings

from .harness import (
    WorkerProcess,
    create_token,
    ioacct,
    operator_token,
    running_workers,
    wait_committed,
    wait_until,
)

pytestmark = pytest.mark.integration

TENANTS = ("acme", "globex")
VOLUMES_PER_TENANT = 12
NS = 1_000_000_000


def _volumes(tenant: str) -> list[str]:
    return [f"{tenant}-vol-{i:02d}" for i in range(VOLUMES_PER_TENANT)]


@pytest.fixture(scope="module")
def workers(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[list[WorkerProcess]]:
    log_dir = Path(tmp_path_factory.mktemp("access-workers"))
    with running_workers(pipeline_settings, log_dir) as both:
        yield both


@pytest.fixture(scope="module")
def tokens(pipeline_settings: Settings, workers: list[WorkerProcess],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A token per tenant, the volumes' events sent and counted."""
    made = {tenant: create_token(pipeline_settings, "--tenant", tenant) for tenant in TENANTS}
    now = time.time_ns()
    lines = []
    for tenant in TENANTS:
        for n, volume in enumerate(_volumes(tenant)):
            for k in range(3):
                complete = now - (30 - n - k) * NS
                lines.append(orjson.dumps({
                    "volume_id": volume, "tenant_id": tenant, "op": "read", "status": "ok",
                    "offset": 4096 * k, "bytes": 4096, "submit_ns": complete - 1_000_000,
                    "complete_ns": complete}))
    path = Path(tmp_path_factory.mktemp("access")) / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    sent = ioacct(pipeline_settings, "produce", "--jsonl", str(path))
    assert sent.returncode == 0, sent.stderr
    wait_committed(pipeline_settings, workers)
    for volume in _volumes("acme") + _volumes("globex"):
        wait_until(lambda v=volume: workers[0].get(f"/volumes/{v}/counters")[0] == 200, 60,
                   f"{volume} to be counted", workers)
    return made


def _request(worker: WorkerProcess, path: str, headers: dict[str, str] | None = None,
             data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(worker.url + path, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _partition(volume: str, partitions: int) -> int:
    return int(DefaultPartitioner()(volume.encode(), list(range(partitions)),
                                    list(range(partitions))))


ENDPOINTS = (
    "/volumes", "/volumes?scope=local", "/whoami", "/dashboard", "/dashboard/app.js",
    "/dashboard/style.css", "/dashboard/plotly.min.js", "/volumes/acme-vol-00/counters",
    "/volumes/acme-vol-00/stats", "/volumes/acme-vol-00/stats?window=1s",
    "/volumes/no-such-volume/counters", "/status", "/metrics", "/router/",
    "/table/counters/", "/no/such/path",
)


def test_the_volumes_are_spread_over_both_workers(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    """Else 'through routing' below would check nothing."""
    for tenant in TENANTS:
        partitions = {_partition(v, pipeline_settings.partitions) for v in _volumes(tenant)}
        for worker in workers:
            owned = set(worker.get("/status")[1]["assigned_partitions"])
            assert partitions & owned, f"no {tenant} volume on worker {worker.web_port}"
            assert partitions - owned, f"every {tenant} volume on worker {worker.web_port}"


def test_every_endpoint_refuses_a_missing_or_wrong_token(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    good = tokens["acme"]
    token_id, secret = good.split("_")[1], good.split("_", 2)[2]
    revoked = create_token(pipeline_settings, "--tenant", "acme")
    assert ioacct(pipeline_settings, "token", "revoke", revoked).returncode == 0
    wrong_headers: dict[str, dict[str, str]] = {
        "none": {},
        "garbage": _bearer("hello"),
        "basic": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "empty bearer": {"Authorization": "Bearer "},
        "unknown id": _bearer(f"ioa_{'0' * 12}_{secret}"),
        "wrong secret": _bearer(f"ioa_{token_id}_{'A' * 43}"),
        "truncated": _bearer(good[:-1]),
        "cookie garbage": {"Cookie": "ioacct_token=hello"},
        "revoked": _bearer(revoked),
    }
    wait_until(lambda: all(_request(w, "/whoami", _bearer(revoked))[0] == 401 for w in workers),
               30, "the revocation to reach both workers", workers)
    for worker in workers:
        for path in ENDPOINTS:
            for name, headers in wrong_headers.items():
                status, got_headers, body = _request(worker, path, headers)
                assert status == 401, f"{path} with {name} token: {status} {body[:200]!r}"
                answer = orjson.loads(body)
                assert answer["error"] == "unauthorized" and answer["reason"], (path, name)
                assert got_headers["WWW-Authenticate"].startswith("Bearer"), (path, name)
            # ... and the right token passes the gate (what comes after is checked below)
            status, _, body = _request(worker, path, _bearer(operator_token(pipeline_settings)))
            assert status != 401, f"{path}: the operator's token refused: {body[:200]!r}"


def test_each_tenant_sees_all_its_volumes_and_none_of_the_others(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    everyone = _volumes("acme") + _volumes("globex")
    for worker in workers:
        for tenant in TENANTS:
            auth = _bearer(tokens[tenant])
            status, _, body = _request(worker, "/volumes", auth)
            listing = orjson.loads(body)
            assert status == 200 and listing["complete"], listing
            assert [v["volume_id"] for v in listing["volumes"]] == _volumes(tenant)
            assert {v["tenant_id"] for v in listing["volumes"]} == {tenant}
            assert all(v["totals"]["read_ios"] == 3 for v in listing["volumes"])
            whoami = orjson.loads(_request(worker, "/whoami", auth)[2])
            assert (whoami["role"], whoami["tenant_id"]) == ("tenant", tenant)
            for volume in everyone:
                for view in ("counters", "stats?window=1s&from=now-10m"):
                    status, _, body = _request(worker, f"/volumes/{volume}/{view}", auth)
                    if volume.startswith(tenant):
                        assert status == 200, (worker.web_port, volume, view, body)
                        assert orjson.loads(body).get("volume_id") == volume
                    else:
                        assert (status, orjson.loads(body)) == (
                            404, {"error": "unknown volume", "volume_id": volume})
        status, _, body = _request(worker, "/volumes",
                                   _bearer(operator_token(pipeline_settings)))
        assert [v["volume_id"] for v in orjson.loads(body)["volumes"]] == sorted(everyone)


def test_another_tenants_volume_reads_exactly_like_one_that_does_not_exist(
    workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    """Crafted ids included: whatever a tenant sends, the answer for a volume of the other
    tenant is the answer for an id that was never seen (with that id in it)."""
    auth = _bearer(tokens["acme"])
    crafted = (
        lambda v: f"/volumes/{v}/counters",
        lambda v: f"/volumes/{v}/stats?window=1h&from=0",
        lambda v: "/volumes/" + "".join(f"%{b:02X}" for b in v.encode()) + "/counters",
        lambda v: f"/volumes/{v.upper()}/counters",
        lambda v: f"/volumes/{v}%2F..%2Facme-vol-00/counters",
        lambda v: f"/volumes/{v}/counters/",
        lambda v: f"/volumes/{v}/counters?volume_id=acme-vol-00",
        lambda v: f"/volumes/acme-vol-00/../{v}/counters",
        lambda v: f"/volumes/{v}%00/counters",
        lambda v: f"/volumes/{urllib.parse.quote(v + ' ')}/stats",
    )
    for worker in workers:
        for make in crafted:
            for other in ("globex-vol-00", "globex-vol-07"):
                ghost = "gl0bex-vol-00" if other.endswith("00") else "gl0bex-vol-07"
                got = _request(worker, make(other), auth)
                like = _request(worker, make(ghost), auth)
                assert got[0] == like[0], (make(other), got, like)
                assert got[0] != 200, (make(other), got)
                assert got[2] == like[2].replace(ghost.encode(), other.encode()).replace(
                    ghost.upper().encode(), other.upper().encode()), (make(other), got, like)


def test_tenants_cannot_reach_operator_endpoints(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    for worker in workers:
        for path in ("/status", "/metrics", "/router/", "/table/counters/", "/no/such/path"):
            status, _, body = _request(worker, path, _bearer(tokens["acme"]))
            assert (status, orjson.loads(body)["error"]) == (403, "forbidden"), (path, body)
        for path in ("/volumes/../status", "/volumes/%2E%2E/status", "/dashboard/../metrics"):
            status, _, body = _request(worker, path, _bearer(tokens["acme"]))
            assert (status, orjson.loads(body)["error"]) == (400, "bad path"), (path, body)
        status, _, body = _request(worker, "/metrics", _bearer(operator_token(pipeline_settings)))
        assert status == 200 and b"acme-vol-" in body and b"globex-vol-" in body, body[:300]


def test_the_query_cli_carries_the_token(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for worker in workers:
        own = ioacct(pipeline_settings, "query", "counters", "acme-vol-03", "--url", worker.url,
                     "--token", tokens["acme"])
        assert own.returncode == 0 and orjson.loads(own.stdout)["read_ios"] == 3, own.stderr
        other = ioacct(pipeline_settings, "query", "counters", "globex-vol-03",
                       "--url", worker.url, "--token", tokens["acme"])
        assert other.returncode == 2 and "unknown volume" in other.stderr
    monkeypatch.delenv("IOACCT_TOKEN", raising=False)
    none = ioacct(pipeline_settings, "query", "counters", "acme-vol-03", "--url", workers[0].url)
    assert none.returncode == 1 and "needs a token" in none.stderr
    monkeypatch.setenv("IOACCT_TOKEN", tokens["globex"])  # the environment, as make run says
    via_env = ioacct(pipeline_settings, "query", "stats", "globex-vol-03", "--window", "1s",
                     "--from", "now-10m", "--url", workers[0].url)
    assert via_env.returncode == 0, via_env.stderr
    assert sum(w["read_ios"] for w in orjson.loads(via_env.stdout)["windows"]) == 3


def test_the_sign_in_form_sets_a_cookie_that_works_like_the_token(
    workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    worker = workers[1]
    status, _, body = _request(worker, "/login")
    assert status == 200 and b"<form" in body and b"acme" not in body
    bad = _request(worker, "/login", data=b"token=ioa_nonsense")
    assert bad[0] == 401 and "Set-Cookie" not in bad[1]
    form = urllib.parse.urlencode({"token": tokens["globex"]}).encode()
    status, headers, body = _request(worker, "/login", data=form)
    assert status == 200 and orjson.loads(body)["tenant_id"] == "globex"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    listing = orjson.loads(_request(worker, "/volumes", jar)[2])
    assert [v["volume_id"] for v in listing["volumes"]] == _volumes("globex")
    status, _, body = _request(worker, "/volumes/acme-vol-01/counters", jar)
    assert status == 404
    assert _request(worker, "/dashboard", jar)[0] == 200
    browser = _request(worker, "/dashboard", {"Accept": "text/html"})  # urllib follows 303
    assert browser[0] == 200 and b'<form id="login">' in browser[2]  # the form, not the panel


def test_revocation_takes_effect_on_every_worker_without_a_restart(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    pids = [w.process.pid for w in workers]
    token = create_token(pipeline_settings, "--tenant", "acme")
    wait_until(lambda: all(_request(w, "/volumes/acme-vol-02/counters", _bearer(token))[0]
                           == 200 for w in workers), 30, "the new token to reach both workers",
               workers)
    token_id = token.split("_")[1]
    started = time.monotonic()
    revoked = ioacct(pipeline_settings, "token", "revoke", token_id)
    assert revoked.returncode == 0 and token_id in revoked.stdout, revoked.stderr
    print(f"ioacct token revoke took {time.monotonic() - started:.2f} s")
    wait_until(lambda: all(_request(w, "/volumes/acme-vol-02/counters", _bearer(token))[0]
                           == 401 for w in workers), 30, "the revocation to reach both workers",
               workers)
    print(f"revocation reached both workers {time.monotonic() - started:.2f} s after the "
          "command started")
    for worker in workers:
        status, _, body = _request(worker, "/whoami", _bearer(token))
        assert (status, orjson.loads(body)["reason"]) == (401, "token revoked")
        assert _request(worker, "/whoami", _bearer(tokens["acme"]))[0] == 200  # others stay
    assert [w.process.pid for w in workers] == pids and all(w.alive() for w in workers)
    listed = ioacct(pipeline_settings, "token", "list", "--json")
    row = next(r for r in orjson.loads(listed.stdout) if r["token_id"] == token_id)
    assert row["revoked_ns"] is not None and "secret_sha256" not in row
    again = ioacct(pipeline_settings, "token", "revoke", "0" * 12)
    assert again.returncode == 1 and "no token" in again.stderr

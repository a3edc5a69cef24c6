"""Access control on the real broker with two workers: tokens, tenants, routing, revocation.

Two tenants own volumes spread over both workers' partitions. Every endpoint refuses a
missing or wrong token; each tenant sees all of its own volumes and none of the other's,
whichever worker it asks (half of the volume requests are routed to the other worker),
and another tenant's volume answers byte for byte like a volume that does not exist,
also for crafted ids; revoking a token shuts it out of both workers without a restart.
HTTP cannot starve ingest: a token over its rate gets 429 with Retry-After, a stats
answer holds at most IOACCT_WEB_MAX_WINDOWS windows, out-of-range numbers are 400; every
answer carries the security headers; a sign-in from another origin is refused; a worker
serves HTTPS with a given certificate, its cookie then Secure.
"""

from __future__ import annotations

import ssl
import subprocess
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
from tests.conftest import free_port

from .harness import (
    WorkerProcess,
    create_token,
    ioacct,
    operator_token,
    running_workers,
    start_worker,
    wait_committed,
    wait_until,
)

pytestmark = pytest.mark.integration

TENANTS = ("acme", "globex")
VOLUMES_PER_TENANT = 12
NS = 1_000_000_000
# Tenants' limit in this module: 400 requests at once, then one a second (the other tests
# stay well under it per token and worker; the 429 test spends a fresh token's burst).
TENANT_RATE_PER_S, TENANT_BURST = 1.0, 400
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _volumes(tenant: str) -> list[str]:
    return [f"{tenant}-vol-{i:02d}" for i in range(VOLUMES_PER_TENANT)]


@pytest.fixture(scope="module")
def workers(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[list[WorkerProcess]]:
    log_dir = Path(tmp_path_factory.mktemp("access-workers"))
    limited = pipeline_settings.with_overrides(web_rate_per_s=TENANT_RATE_PER_S,
                                               web_burst=TENANT_BURST)
    with running_workers(limited, log_dir) as both:
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


def _assert_security_headers(headers: dict[str, str], what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (what, name, headers)
    csp = headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, (what, csp)


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
                _assert_security_headers(got_headers, path)
                answer = orjson.loads(body)
                assert answer["error"] == "unauthorized" and answer["reason"], (path, name)
                assert got_headers["WWW-Authenticate"].startswith("Bearer"), (path, name)
            # ... and the right token passes the gate (what comes after is checked below)
            status, got_headers, body = _request(worker, path,
                                                 _bearer(operator_token(pipeline_settings)))
            assert status != 401, f"{path}: the operator's token refused: {body[:200]!r}"
            _assert_security_headers(got_headers, path)


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


def _owned_by(worker: WorkerProcess, volumes: list[str], partitions: int) -> tuple[str, str]:
    """(a volume this worker owns, one the other worker owns: asked here, it is routed)."""
    owned = set(worker.get("/status")[1]["assigned_partitions"])
    mine = next(v for v in volumes if _partition(v, partitions) in owned)
    theirs = next(v for v in volumes if _partition(v, partitions) not in owned)
    return mine, theirs


def test_a_token_over_its_rate_gets_429_and_other_tokens_do_not(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    """A fresh acme token spends its burst on one worker: then 429 with Retry-After; the
    other tenant's token is served meanwhile; /status counts the refusals; after the wait
    it was told, the token is served again."""
    worker = workers[0]
    flood = _bearer(create_token(pipeline_settings, "--tenant", "acme"))
    wait_until(lambda: _request(worker, "/whoami", flood)[0] == 200, 30,
               "the new token to reach the worker", workers)
    # A volume it owns: a forward would spend the owner's bucket too (docs/access.md).
    mine = _owned_by(worker, _volumes("acme"), pipeline_settings.partitions)[0]
    statuses: list[int] = []
    while 429 not in statuses and len(statuses) < TENANT_BURST + 200:
        statuses.append(_request(worker, f"/volumes/{mine}/counters", flood)[0])
    assert statuses[-1] == 429, f"no 429 after {len(statuses)} requests"
    # The burst (the /whoami above took one), and whatever refilled meanwhile, then 429.
    assert set(statuses[:-1]) == {200} and len(statuses) - 1 + 1 >= TENANT_BURST, statuses
    status, headers, body = _request(worker, f"/volumes/{mine}/counters", flood)
    assert status == 429 and orjson.loads(body)["error"] == "too many requests"
    retry_after_s = int(headers["Retry-After"])
    assert retry_after_s >= 1
    _assert_security_headers(headers, "429")
    assert _request(worker, "/volumes/globex-vol-01/counters", _bearer(tokens["globex"]))[0] \
        == 200
    http = worker.get("/status")[1]["http"]
    assert http["requests_refused_429"] >= 2 and http["requests_allowed"] >= TENANT_BURST
    time.sleep(retry_after_s)  # what a client does with Retry-After: then it is served
    assert _request(worker, "/whoami", flood)[0] == 200


def test_a_stats_answer_holds_at_most_the_window_cap(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    """3,600 windows of 1 s: answered, on the owner and through a forward; one more: 400
    saying what to do. The default spans of every window length fit."""
    auth = _bearer(tokens["acme"])
    to_ns = time.time_ns() // NS * NS
    for worker in workers:
        for volume in _owned_by(worker, _volumes("acme"), pipeline_settings.partitions):
            base = f"/volumes/{volume}/stats?window=1s&to={to_ns}"
            status, _, body = _request(worker, f"{base}&from={to_ns - 3600 * NS}", auth)
            answer = orjson.loads(body)
            assert status == 200 and answer["volume_id"] == volume, body[:300]
            assert sum(w["read_ios"] for w in answer["windows"]) == 3
            status, headers, body = _request(worker, f"{base}&from={to_ns - 3600 * NS - 1}",
                                             auth)
            reason = orjson.loads(body)["error"]
            assert status == 400 and "at most 3600" in reason and "narrow from/to" in reason
            _assert_security_headers(headers, "400")
            for window in ("1s", "1m", "1h"):
                status, _, body = _request(worker, f"/volumes/{volume}/stats?window={window}",
                                           auth)
                assert status == 200, (window, body[:300])


BAD_NUMBERS = (
    "from=99999999999999999999999", "to=99999999999999999999999", "from=-5",
    "from=-99999999999999999999999", "to=-1&from=-100", "from=" + "9" * 5000,
    "from=now-99999999999999999999d", "to=now%2B99999999999999999999d",
    "from=9999-12-31T23:59:59", "from=0001-01-01", "from=now-15q", "from=1e30",
    "from=0x10", "from=NaN", "from=inf", "window=-1s", "window=99999999999999999999s",
    "window=1s&from=0", "window=1h&from=0&to=9223372036854775807",
    "to=1000&from=2000",
)


def test_out_of_range_numbers_are_400_never_500(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    auth = _bearer(tokens["acme"])
    for worker in workers:
        for volume in _owned_by(worker, _volumes("acme"), pipeline_settings.partitions):
            for query in BAD_NUMBERS:
                status, _, body = _request(worker, f"/volumes/{volume}/stats?{query}", auth)
                assert status == 400, (worker.web_port, volume, query, status, body[:300])
                assert orjson.loads(body)["error"], (query, body[:300])
        status, _, body = _request(worker, "/volumes/" + "v" * 100_000 + "/counters", auth)
        assert 400 <= status < 500, (status, body[:200])
        assert all(w.alive() for w in workers)


def test_a_sign_in_or_out_from_another_origin_is_refused(
    workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    worker = workers[0]
    form = urllib.parse.urlencode({"token": tokens["acme"]}).encode()
    here = f"http://127.0.0.1:{worker.web_port}"
    for path in ("/login", "/logout"):
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Origin": here, "Sec-Fetch-Site": "cross-site"},
                        {"Origin": f"http://127.0.0.1:{worker.web_port + 1}"}):
            status, got, body = _request(worker, path, headers, data=form)
            assert (status, orjson.loads(body)["error"]) == (403, "forbidden"), (path, headers)
            assert "Set-Cookie" not in got
    status, got, body = _request(worker, "/login", {"Origin": here,
                                                    "Sec-Fetch-Site": "same-origin"}, data=form)
    assert status == 200 and "Secure" not in got["Set-Cookie"]  # plain HTTP: no Secure flag
    status, got, _ = _request(worker, "/logout", {"Origin": here}, data=b"")
    assert status == 200 and "Set-Cookie" in got


def test_a_cookie_signed_in_caller_is_served_through_a_forward(
    pipeline_settings: Settings, workers: list[WorkerProcess], tokens: dict[str, str],
) -> None:
    """The forward carries the token the cookie held (as Authorization), not the cookie:
    the owner checks the same token, and the caller's cookie never leaves this worker."""
    worker = workers[1]
    form = urllib.parse.urlencode({"token": tokens["acme"]}).encode()
    status, headers, _ = _request(worker, "/login", data=form)
    assert status == 200
    jar = {"Cookie": headers["Set-Cookie"].split(";", 1)[0]}
    mine, theirs = _owned_by(worker, _volumes("acme"), pipeline_settings.partitions)
    for volume in (mine, theirs):
        status, _, body = _request(worker, f"/volumes/{volume}/counters", jar)
        assert status == 200 and orjson.loads(body)["read_ios"] == 3, body[:300]
    other = _owned_by(worker, _volumes("globex"), pipeline_settings.partitions)[1]
    assert _request(worker, f"/volumes/{other}/counters", jar)[0] == 404


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "web-cert.pem", directory / "web-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def test_a_worker_serves_https_with_a_given_certificate(
    pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A worker of a pipeline of its own (so as not to join the group above) with
    IOACCT_WEB_CERT/KEY: HTTPS only, the certificate checked by the client, the sign-in
    cookie Secure, HSTS on."""
    tmp = Path(tmp_path_factory.mktemp("https"))
    cert, key = _self_signed(tmp)
    settings = pipeline_settings.with_overrides(
        topic_prefix=pipeline_settings.topic_prefix + "s", web_cert=str(cert),
        web_key=str(key))
    assert ioacct(settings, "topics").returncode == 0
    worker = start_worker(settings, free_port(), tmp)
    url = f"https://127.0.0.1:{worker.web_port}"
    trust = ssl.create_default_context(cafile=str(cert))
    token = create_token(settings, "--tenant", "acme")

    def get(path: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(url + path, data=data, headers=_bearer(token))
        try:
            with urllib.request.urlopen(request, timeout=10, context=trust) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def up() -> bool:
        try:
            return get("/whoami")[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_until(up, 120, "the HTTPS worker to answer", [worker])
        status, headers, body = get("/whoami")
        assert orjson.loads(body)["tenant_id"] == "acme"
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        _assert_security_headers(headers, "https")
        form = urllib.parse.urlencode({"token": token}).encode()
        status, headers, _ = get("/login", data=form)
        flags = [f.strip().lower() for f in headers["Set-Cookie"].split(";")[1:]]
        assert status == 200 and "secure" in flags and "httponly" in flags, flags
        with pytest.raises(urllib.error.URLError):  # no trust in the certificate: refused
            urllib.request.urlopen(url + "/whoami", timeout=10,
                                   context=ssl.create_default_context())
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP
            urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/login", timeout=10)
    finally:
        worker.stop()

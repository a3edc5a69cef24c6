"""Tokens and access rules (streams/auth.py): pure, no broker."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.api.auth import (
    OPERATOR,
    TENANT,
    Access,
    AuthError,
    TokenBook,
    TokenRecord,
    bearer_token,
    endpoint_access,
    new_token,
    parse_token,
)
from streams.core.codec import default_schemas

NOW = 1_795_000_000_000_000_000


def _book(*specs: tuple[str, str | None]) -> tuple[TokenBook, list[str]]:
    book, texts = TokenBook(), []
    for role, tenant in specs:
        text, record = new_token(role, tenant, NOW)
        book.apply(record)
        texts.append(text)
    return book, texts


def test_a_token_authenticates_as_its_role_and_tenant() -> None:
    book, (op, t1, t2) = _book((OPERATOR, None), (TENANT, "t1"), (TENANT, "t2"))
    assert book.authenticate(op).is_operator
    p1, p2 = book.authenticate(t1), book.authenticate(t2)
    assert (p1.role, p1.tenant_id, p2.tenant_id) == (TENANT, "t1", "t2")
    assert p1.may_read("t1") and not p1.may_read("t2") and not p2.may_read("t1")
    assert book.authenticate(op).may_read("t1") and book.authenticate(op).may_read("t2")


def test_the_store_keeps_only_a_digest_of_the_secret() -> None:
    text, record = new_token(TENANT, "t1", NOW, "ci")
    token_id, secret = parse_token(text)
    assert record.token_id == token_id
    assert secret not in repr(record) and secret not in str(record.to_avro())
    assert record.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert "secret_sha256" not in record.public()


def test_records_round_trip_through_avro() -> None:
    schemas = default_schemas()
    for role, tenant in ((OPERATOR, None), (TENANT, "tenant-007")):
        _, record = new_token(role, tenant, NOW, "label")
        revoked = TokenRecord(**{**record.__dict__, "revoked_ns": NOW + 1})
        for r in (record, revoked):
            name, decoded = schemas.decode(schemas.encode("AuthToken", r.to_avro()))
            assert name == "AuthToken" and TokenRecord.from_avro(decoded) == r


@pytest.mark.parametrize("role, tenant", [
    (TENANT, None), (TENANT, ""), (TENANT, "a/b"), (TENANT, "x" * 129), (OPERATOR, "t1"),
    ("admin", None),
])
def test_bad_token_requests_are_refused(role: str, tenant: str | None) -> None:
    with pytest.raises(ValueError):
        new_token(role, tenant, NOW)


def test_wrong_secret_unknown_id_and_malformed_tokens_fail() -> None:
    book, (text,) = _book((TENANT, "t1"))
    token_id, secret = parse_token(text)
    other_secret = ("A" if secret[0] != "A" else "B") + secret[1:]
    with pytest.raises(AuthError, match="unknown token"):
        book.authenticate(f"ioa_{token_id}_{other_secret}")
    with pytest.raises(AuthError, match="unknown token"):
        book.authenticate(f"ioa_{'0' * 12}_{secret}")
    for bad in ("", "ioa_", text + "x", text[:-1], text.upper(), f"Bearer {text}",
                f"ioa_{token_id}_{secret[:-1]}!"):
        with pytest.raises(AuthError):
            book.authenticate(bad)


def test_revocation_is_final() -> None:
    text, record = new_token(TENANT, "t1", NOW)
    revoked = TokenRecord(**{**record.__dict__, "revoked_ns": NOW + 5})
    book = TokenBook([record, revoked])
    with pytest.raises(AuthError, match="revoked"):
        book.authenticate(text)
    book.apply(record)  # the creation record read again (a replay) does not bring it back
    with pytest.raises(AuthError, match="revoked"):
        book.authenticate(text)
    assert book.get(record.token_id) == revoked


@given(st.text(max_size=80))
def test_no_made_up_text_authenticates(text: str) -> None:
    book, _ = _book((OPERATOR, None), (TENANT, "t1"))
    with pytest.raises(AuthError):
        book.authenticate(text)


def test_tokens_are_distinct_and_well_formed() -> None:
    texts = {new_token(TENANT, "t1", NOW)[0] for _ in range(200)}
    assert len(texts) == 200
    assert all(re.fullmatch(r"ioa_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", t) for t in texts)


def test_bearer_header_wins_over_the_cookie() -> None:
    assert bearer_token("Bearer abc", "cookie") == "abc"
    assert bearer_token("bearer   abc ", None) == "abc"
    assert bearer_token(None, "cookie") == "cookie"
    for header in ("Basic abc", "Bearer", "abc", "Bearer "):
        with pytest.raises(AuthError):
            bearer_token(header, "cookie")  # a bad header is refused, not ignored
    with pytest.raises(AuthError, match="no token"):
        bearer_token(None, None)


@pytest.mark.parametrize("path, access", [
    ("/", Access.PUBLIC), ("/login", Access.PUBLIC), ("/logout", Access.PUBLIC),
    ("/favicon.ico", Access.PUBLIC),
    ("/volumes", Access.CALLER), ("/whoami", Access.CALLER), ("/dashboard", Access.CALLER),
    ("/dashboard/app.js", Access.CALLER), ("/volumes/v1/counters", Access.CALLER),
    ("/volumes/v1/stats", Access.CALLER),
    ("/status", Access.OPERATOR), ("/metrics", Access.OPERATOR),
    ("/router/", Access.OPERATOR), ("/table/counters/v1", Access.OPERATOR),
    ("/login/", Access.OPERATOR), ("/volumesx", Access.OPERATOR), ("/anything", Access.OPERATOR),
    ("", Access.OPERATOR), ("/Volumes", Access.OPERATOR), ("//volumes", Access.OPERATOR),
])
def test_every_path_not_opened_on_purpose_is_for_the_operator(path: str, access: Access) -> None:
    assert endpoint_access(path) is access

"""Bearer tokens and who may read what: the access rules of every HTTP endpoint.

Pure logic: no faust, no aiokafka, no I/O. docs/access.md is the user's side of it.

* A token is ``ioa_<token_id>_<secret>``: ``token_id`` (12 hex digits) is public and names
  the token in the store and in logs; ``secret`` (32 random bytes, URL-safe base64) is
  shown once, when the token is created, and stored only as its SHA-256 digest. A slow
  password hash buys nothing for 256 random bits: nobody can guess them, digest or not.
* Every token is bound to one role: ``operator`` (reads everything) or ``tenant`` (reads
  the volumes of its one ``tenant_id``). A volume of another tenant answers exactly as a
  volume that does not exist.
* The store is the list of :class:`TokenRecord`; a revoked token keeps its record (with
  ``revoked_ns``) so that it can never come back, and ``ioacct token list`` shows it.
* :func:`endpoint_access` says who may call a path; anything it does not know is for the
  operator only, so a new endpoint is closed until someone opens it on purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

TOKEN_PREFIX = "ioa"
OPERATOR, TENANT = "operator", "tenant"
ROLES = (OPERATOR, TENANT)
COOKIE_NAME = "ioacct_token"
_TOKEN_RE = re.compile(r"ioa_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_TENANT_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # the id rule of SEMANTICS.md section 1


class AuthError(ValueError):
    """Why a request carries no valid token; the message goes into the 401 body."""


@dataclass(frozen=True)
class TokenRecord:
    """One token as stored: never the secret, only its digest (Avro ``AuthToken``)."""

    token_id: str
    role: str
    tenant_id: str | None
    secret_sha256: str
    created_ns: int
    label: str = ""
    revoked_ns: int | None = None

    def to_avro(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> TokenRecord:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__})

    def public(self) -> dict[str, Any]:
        """What `ioacct token list` shows: everything but the digest."""
        out = asdict(self)
        del out["secret_sha256"]
        return out


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's role and tenant."""

    token_id: str
    role: str
    tenant_id: str | None

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    def may_read(self, tenant_id: str) -> bool:
        """May this caller read a volume of ``tenant_id``?"""
        return self.is_operator or self.tenant_id == tenant_id

    def to_json(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "role": self.role, "tenant_id": self.tenant_id}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(role: str, tenant_id: str | None, now_ns: int, label: str = ""
              ) -> tuple[str, TokenRecord]:
    """A fresh token: (the text to hand to its holder, once; the record to store)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if role == TENANT:
        if tenant_id is None or not _TENANT_RE.fullmatch(tenant_id):
            raise ValueError("a tenant token needs a tenant id of 1 to 128 characters "
                             "from A-Z a-z 0-9 . _ : -")
    elif tenant_id is not None:
        raise ValueError("an operator token reads every tenant: it takes no tenant id")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(token_id, role, tenant_id, _digest(secret), now_ns, label)
    return f"{TOKEN_PREFIX}_{token_id}_{secret}", record


def parse_token(text: str) -> tuple[str, str]:
    """(token_id, secret) of a token's text; AuthError when it is not one."""
    match = _TOKEN_RE.fullmatch(text.strip())
    if match is None:
        raise AuthError("malformed token: expected ioa_<12 hex digits>_<43 characters>")
    return match.group(1), match.group(2)


def bearer_token(authorization: str | None, cookie: str | None) -> str:
    """The token a request carries: ``Authorization: Bearer <token>``, else the cookie."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return value.strip()
    if cookie:
        return cookie
    raise AuthError("no token: send 'Authorization: Bearer <token>' "
                    "(ioacct token create makes one)")


class TokenBook:
    """The current tokens by id, as read from the token store (latest record wins)."""

    def __init__(self, records: Iterable[TokenRecord] = ()) -> None:
        self._tokens: dict[str, TokenRecord] = {}
        for record in records:
            self.apply(record)

    def apply(self, record: TokenRecord) -> None:
        """Take one record of the store. A revocation is final: a later record of the
        same token that is not revoked (a replayed create) does not bring it back."""
        known = self._tokens.get(record.token_id)
        if known is not None and known.revoked_ns is not None and record.revoked_ns is None:
            return
        self._tokens[record.token_id] = record

    def get(self, token_id: str) -> TokenRecord | None:
        return self._tokens.get(token_id)

    def records(self) -> list[TokenRecord]:
        return sorted(self._tokens.values(), key=lambda r: (r.created_ns, r.token_id))

    def __len__(self) -> int:
        return len(self._tokens)

    def authenticate(self, text: str) -> Principal:
        """The caller behind a token's text; AuthError for anything else.

        The reasons say which rule failed (malformed, unknown, revoked, wrong secret) but
        never anything about other tokens; unknown and wrong-secret read the same, so a
        caller cannot tell a real token id from a made-up one.
        """
        token_id, secret = parse_token(text)
        record = self._tokens.get(token_id)
        # Compare digests in constant time even for an unknown id.
        expected = record.secret_sha256 if record is not None else "0" * 64
        if not hmac.compare_digest(_digest(secret), expected) or record is None:
            raise AuthError("unknown token")
        if record.revoked_ns is not None:
            raise AuthError("token revoked")
        return Principal(record.token_id, record.role, record.tenant_id)


class Access(Enum):
    """Who may call an endpoint."""

    PUBLIC = "public"      # no token: the login form, and nothing that holds data
    CALLER = "caller"      # any valid token; the view itself filters by tenant
    OPERATOR = "operator"  # operator tokens only


_PUBLIC_PATHS = frozenset({"/", "/login", "/login.js", "/login.css", "/logout",
                           "/favicon.ico"})
_CALLER_PATHS = frozenset({"/volumes", "/whoami", "/dashboard"})
_CALLER_PREFIXES = ("/volumes/", "/dashboard/")


def endpoint_access(path: str) -> Access:
    """Who may call ``path``; every path not named here is for the operator only
    (``/status``, ``/metrics`` and faust's own views: ``/router``, ``/table``, ...)."""
    if path in _PUBLIC_PATHS:
        return Access.PUBLIC
    if path in _CALLER_PATHS or path.startswith(_CALLER_PREFIXES):
        return Access.CALLER
    return Access.OPERATOR

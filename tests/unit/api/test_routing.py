"""Requests between workers (streams/api/routing.py): only to a member of the group, with
the caller's token and nothing else of its request."""

from __future__ import annotations

import pytest
from yarl import URL

from streams.api.routing import NotAMember, forward_headers, forward_target

ME = URL("http://10.0.0.1:6066")
MEMBERS = ["http://10.0.0.1:6066", "http://10.0.0.2:6066", "http://10.0.0.3:6067"]
REL = URL("/volumes/v%2F1/stats?window=1s&from=now-10m")


def test_the_owner_itself_serves_the_request() -> None:
    assert forward_target(URL("http://10.0.0.1:6066/"), MEMBERS, ME, REL) is None
    assert forward_target(URL("HTTP://10.0.0.1:6066"), MEMBERS, ME, REL) is None


def test_another_member_gets_the_same_path_and_query() -> None:
    target = forward_target(URL("http://10.0.0.2:6066"), MEMBERS, ME, REL)
    assert target is not None
    assert (target.scheme, target.host, target.port) == ("http", "10.0.0.2", 6066)
    assert target.raw_path == REL.raw_path and target.query == REL.query


@pytest.mark.parametrize("owner", [
    "http://evil.example:6066",          # advertised by no member
    "http://10.0.0.2:6067",              # a member's host, another port
    "https://10.0.0.2:6066",             # a member's host and port, another scheme
    "ftp://10.0.0.2:6066",
    "http://user:pw@10.0.0.2:6066",      # credentials in the URL
])
def test_an_owner_outside_the_group_is_refused(owner: str) -> None:
    with pytest.raises(NotAMember):
        forward_target(URL(owner), MEMBERS, ME, REL)


def test_no_members_known_refuses_every_other_owner() -> None:
    with pytest.raises(NotAMember):
        forward_target(URL("http://10.0.0.2:6066"), [], ME, REL)


def test_a_forward_carries_the_token_and_nothing_else() -> None:
    headers = forward_headers("ioa_0123456789ab_" + "A" * 43)
    assert headers == {"Authorization": "Bearer ioa_0123456789ab_" + "A" * 43,
                       "Accept": "application/json"}
    assert not any(k.lower() in ("cookie", "host", "origin") for k in headers)

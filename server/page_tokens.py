"""Page tokens of task lists: opaque to callers, written and checked here.

A token this server did not issue, or one issued for another shape of list (all kinds
together, or a page per kind), is a `BadPageToken` whose message says which.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from server.records import TaskKind


class BadPageToken(ValueError):
    """A page token this server did not issue, or one for another shape of list."""


_MAX_ROW_ID = 2**63 - 1


# The two shapes of token: "id:N" resumes one list of all kinds below row N;
# "kinds:training=N,inference=M" resumes each kind below its own row (0: nothing left).
_ONE_LIST = "id"
_PER_KIND = "kinds"


def encode_page_token(row_id: int) -> str:
    return _encode(f"{_ONE_LIST}:{row_id}")


def encode_kinds_page_token(cursors: Mapping[TaskKind, int]) -> str:
    return _encode(f"{_PER_KIND}:" + ",".join(f"{k.value}={v}" for k, v in cursors.items()))


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_page_token(token: str) -> int:
    """The row id a token of a list of all kinds together resumes below."""
    body = _token_body(token, _ONE_LIST)
    try:
        return _row_id(body, lowest=1)
    except ValueError:
        raise _not_issued(token) from None


def decode_kinds_page_token(token: str, kinds: Sequence[TaskKind]) -> dict[TaskKind, int]:
    """Per kind, the row id a token of a list paged per kind resumes below; its kinds
    must be `kinds`, those of the list it is asked to continue."""
    body = _token_body(token, _PER_KIND)
    cursors: dict[TaskKind, int] = {}
    try:
        for part in body.split(","):
            name, _, value = part.partition("=")
            kind = TaskKind(name)
            if kind in cursors:
                raise ValueError(part)
            cursors[kind] = _row_id(value, lowest=0)
    except ValueError:
        raise _not_issued(token) from None
    if set(cursors) != set(kinds):
        raise BadPageToken(
            f"page_token {token!r} continues a list of other kinds; ask for the same kind "
            "as the page that gave it"
        )
    return cursors


def _token_body(token: str, shape: str) -> str:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise _not_issued(token) from None
    prefix, _, body = text.partition(":")
    if prefix == shape:
        return body
    if prefix == _ONE_LIST:
        raise BadPageToken(
            f"page_token {token!r} continues a list of all kinds together; "
            "ask without page_per_kind"
        )
    if prefix == _PER_KIND:
        raise BadPageToken(
            f"page_token {token!r} continues a list paged per kind; ask with page_per_kind"
        )
    raise _not_issued(token)


def _row_id(value: str, *, lowest: int) -> int:
    # Only what the encoders write: a row id SQLite can hold (a bigger number would make
    # the query raise OverflowError, an INTERNAL for a bad token).
    if not (value.isascii() and value.isdigit() and len(value) <= 19):
        raise ValueError(value)
    row_id = int(value)
    if not lowest <= row_id <= _MAX_ROW_ID:
        raise ValueError(value)
    return row_id


def _not_issued(token: str) -> BadPageToken:
    return BadPageToken(f"page_token {token!r} was not issued by this server")

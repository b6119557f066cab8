"""Counter ids, decided on the raw request path so that distinct paths never share a counter.

Servers decode the path leniently: uvicorn turns every invalid UTF-8 percent-escape into
U+FFFD, so `a%FFx`, `a%FEx` and `a%EF%BF%BDx` would all name `a\ufffdx`. Decoding the raw
path strictly refuses the invalid ones, and a strict UTF-8 decoding is one-to-one: a literal
U+FFFD stays a valid id character, reachable only through its own encoding (`%EF%BF%BD`).
"""

from urllib.parse import unquote


class InvalidId(ValueError):
    """The raw id is not valid percent-encoded UTF-8."""


def id_from_raw_path(raw_path: bytes) -> str | None:
    """The id segment of a raw `/{store}/{id}` path, strictly decoded; None if not that shape."""
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidId("id must be percent-encoded UTF-8") from None
    segments = text.split("/")
    if len(segments) != 3 or segments[0]:
        return None
    try:
        return unquote(segments[2], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidId("id must be valid UTF-8 (an invalid percent-escape was sent)") from None

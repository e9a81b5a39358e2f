"""Keep secrets out of everything the harness writes: the API key, URL credentials, auth headers.

Redaction always runs on the whole text *before* any truncation, so a key cut in half by a length
limit cannot leave its prefix behind.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MARKER = "[REDACTED]"
KEY_PREFIX_CHARS = 8  # a key's first characters identify it; they are redacted wherever they appear
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]*(?::[^/\s@]*)?@")
_AUTHORIZATION = re.compile(
    r"(?i)((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?:[a-z][\w.-]*\s+)?[^\s\"',;}]+")


def redact_url(url: str) -> str:
    """`https://user:pass@host/v1` → `https://[REDACTED]@host/v1` (other URLs unchanged)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f"{MARKER}@{parts.netloc.rsplit('@', 1)[1]}"))


def redact_text(text: str, secret: str | None = None) -> tuple[str, bool]:
    """The text with URL credentials, `Authorization` values (any scheme) and the secret (or any
    run of it from its first 8 characters on) replaced by a marker; and whether anything was."""
    out = _URL_CREDENTIALS.sub(lambda m: m[1] + MARKER + "@", text)
    out = _AUTHORIZATION.sub(lambda m: m[1] + MARKER, out)
    if secret:
        out = _redact_key(out, secret)
    return out, out != text


def _redact_key(text: str, secret: str) -> str:
    head = secret[:KEY_PREFIX_CHARS]
    if head not in text:
        return text
    pieces, start = [], 0
    while (at := text.find(head, start)) >= 0:
        end = at + len(head)
        while end < len(text) and end - at < len(secret) and text[end] == secret[end - at]:
            end += 1
        pieces += [text[start:at], MARKER]
        start = end
    return "".join(pieces) + text[start:]


def redact_argv(argv: list[str]) -> list[str]:
    """A command line as recorded in the manifest: URL credentials removed from every argument."""
    return [redact_text(arg)[0] for arg in argv]

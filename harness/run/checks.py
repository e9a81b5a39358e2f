"""Checks of run settings shared by `ubench run`'s options and study files, so that both refuse
the same values in the same words (each caller says where the value came from)."""
from __future__ import annotations

from urllib.parse import urlsplit


def base_url_problem(value: str) -> str | None:
    """Why `value` is not an http(s) URL with a host, or None when it is one."""
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"{value!r}: {exc}"
    if url.scheme not in ("http", "https") or not url.hostname or " " in value:
        return f"{value!r} is not an http(s) URL with a host, e.g. http://127.0.0.1:8000/v1"
    return None


def top_p_problem(value: float) -> str | None:
    """Why `value` is not a nucleus-sampling mass in (0, 1], or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number"
    if not 0 < value <= 1:
        return f"{value:g} is not in (0, 1]"
    return None

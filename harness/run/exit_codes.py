"""What `ubench run`'s exit status means, so that a script can trust it (README and --help)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

OK = 0  # every selected item has an answer
SOME_ERRORS = 1  # the run ended, some items are errors (a re-run retries them); or it could not write
USAGE = 2  # usage or input error, found before anything was sent
NOTHING_ANSWERED = 3  # no item could be answered, however many there were


def for_summaries(summaries: Iterable[Mapping[str, Any]]) -> int:
    """The exit status of a run (or a prompt study) from its summaries."""
    summaries = list(summaries)
    if any(s["n_errors"] for s in summaries):
        return SOME_ERRORS if any(s["n_scored"] for s in summaries) else NOTHING_ANSWERED
    return OK

"""One process at a time per run folder: an OS-level lock held for the life of a run.

Two runs appending to one samples.jsonl would ask (and pay for) the same items twice and write
duplicate records. `fcntl.flock` is released by the kernel when its holder dies, however it dies,
so a lock left by a killed run never blocks the next one. `run`, `score`, `report` and `merge`
all take it; a study takes its own folder's and every cell's for its whole life, so that a
`ubench run` into a cell (or a second study) cannot write a cell the study writes. The holder's
PID is written into the lock file so the refusal can name it.
"""
from __future__ import annotations

import fcntl
import os
import resource
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

LOCK_NAME = ".ubench.lock"


class FolderLocked(Exception):
    """Another live process holds the folder; the message names its PID."""


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock (creating the folder) for the block, or raise FolderLocked at once."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise FolderLocked(f"{folder} is in use by another ubench process (PID {holder}); "
                               "wait for it to finish, or use another --output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def folder_locks(folders: Iterable[Path]) -> Iterator[None]:
    """Hold every folder's lock (each once, in order) for the block, or raise FolderLocked for the
    first one held elsewhere, releasing those taken. Each lock is an open file: a large study may
    need more than the soft limit of open files, which is raised (up to the hard limit) first."""
    folders = list(dict.fromkeys(Path(f) for f in folders))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(folders) + 1024  # and the run's own files, sockets and pipes
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (
            wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
    with ExitStack() as stack:
        for folder in folders:
            stack.enter_context(folder_lock(folder))
        yield

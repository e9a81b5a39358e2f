"""Read examples and encode each image once, off the event loop, in batches.

The runner's producer pulls one batch per hop to a worker thread (a hop per example costs more in
thread hand-offs than the work itself). Within a batch the images are encoded in parallel by a thread
pool sized to the cores: decoding, resizing and PNG/JPEG encoding in Pillow release the GIL, so the
CPU-heavy re-encoding paths (`--max-image-pixels`, `--image-format`) use every core. Each encode
runs in a copy of the caller's context, so what it logs reaches the run's own run.log.
"""
from __future__ import annotations

import contextvars
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

from harness.data.items import Example

Encoded = tuple[Any, "str | None"]  # (EncodedImage or None, problem or None)
Batch = list[tuple[list[Any], Any, "str | None"]]


def encoded_batches(examples: Iterable[Example], todo_of: Callable[[Example], list[Any]],
                    encode: Callable[[Example], Encoded], *, batch_items: int) -> Iterator[Batch]:
    """Batches of (the example's work still to do, image, image problem), each of at least
    `batch_items` units except the last; an example with nothing to do is not even encoded."""
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers, thread_name_prefix="ubench-encode") as pool:
        pending: list[tuple[list[Any], Example]] = []
        count = 0
        for example in examples:
            todo = todo_of(example)
            if not todo:
                continue
            pending.append((todo, example))
            count += len(todo)
            if count >= batch_items:
                yield _encode_all(pool, pending, encode)
                pending, count = [], 0
        if pending:
            yield _encode_all(pool, pending, encode)


def _encode_all(pool: ThreadPoolExecutor, pending: list[tuple[list[Any], Example]],
                encode: Callable[[Example], Encoded]) -> Batch:
    # One copy per task: a context can be entered by one thread at a time.
    contexts = [contextvars.copy_context() for _ in pending]
    encoded = pool.map(lambda context, example: context.run(encode, example), contexts,
                       [example for _, example in pending])
    return [(todo, image, problem) for (todo, _), (image, problem) in zip(pending, encoded)]

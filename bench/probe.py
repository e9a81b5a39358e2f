"""Run `ubench run ...` in this process and record what the benchmark needs to know about it.

    python bench/probe.py REPORT.json run --model vllm/test --base-url URL ...

Wraps (never changes) the runner's own steps to count, per image, how often it was encoded, the CPU
time spent reading rows (`read_cpu_s`, which includes the up-front counting pass, `count_cpu_s`),
encoding images, and computing the summary and the report (measured in the threads doing it), and
when the first request left and the last answer came (with the process CPU time at both); at exit
writes those with the process's CPU time and peak RSS
to REPORT.json.
"""
from __future__ import annotations

import atexit
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness.adapters.openai_compat as openai_compat  # noqa: E402
import harness.report.finalize as finalize_module  # noqa: E402
import harness.report.run_report as report_module  # noqa: E402
import harness.run.runner as runner  # noqa: E402
from harness.cli import main  # noqa: E402

START = time.time()
encodes: Counter = Counter()
state = {"encode_cpu_s": 0.0, "read_cpu_s": 0.0, "first_request": None, "cpu_at_first": None,
         "encode_cpu_at_first": None, "requests": 0, "last_response": None, "cpu_at_last": None,
         "max_rss_mb_at_last": None, "summary_cpu_s": 0.0, "summary_wall_s": 0.0,
         "report_cpu_s": 0.0, "report_wall_s": 0.0, "count_cpu_s": 0.0, "finalize_start": None,
         "finalize_end": None, "main_start": None, "main_end": None}


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM belongs to the memory the process has had since
    exec; ru_maxrss does not: it starts at the RSS of the parent when it forked (the benchmark,
    after reading a 96k-record samples.jsonl, is ~800 MB), which would hide our own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


_encode = runner._encode


def counting_encode(example, config):
    t = time.thread_time()
    try:
        return _encode(example, config)
    finally:
        state["encode_cpu_s"] += time.thread_time() - t
        encodes[example.image_id] += 1


_iter_examples = runner.iter_examples


def timed_examples(*args, **kwargs):
    it = _iter_examples(*args, **kwargs)
    while True:
        t = time.thread_time()
        example = next(it, None)
        state["read_cpu_s"] += time.thread_time() - t
        if example is None:
            return
        yield example


_count_requests = runner.count_requests


def timed_count(*args, **kwargs):  # the up-front pass that counts items for the progress bar
    t = time.thread_time()
    try:
        return _count_requests(*args, **kwargs)
    finally:
        state["count_cpu_s"] += time.thread_time() - t


_finalize = runner.finalize


def timed_finalize(*args, **kwargs):
    t, w = time.thread_time(), time.perf_counter()
    if not state["finalize_start"]:  # the requests are over; the summary and report not begun
        state["finalize_start"] = time.time()
        state["max_rss_mb_at_last"] = peak_rss_mb()
    try:
        return _finalize(*args, **kwargs)
    finally:
        state["summary_cpu_s"] += time.thread_time() - t
        state["summary_wall_s"] += time.perf_counter() - w
        state["finalize_end"] = time.time()


_write_report = report_module.write_report


def timed_report(*args, **kwargs):
    t, w = time.thread_time(), time.perf_counter()
    try:
        return _write_report(*args, **kwargs)
    finally:
        state["report_cpu_s"] += time.thread_time() - t
        state["report_wall_s"] += time.perf_counter() - w


_complete = openai_compat.OpenAICompatAdapter.complete


async def noting_complete(self, request):
    if state["first_request"] is None:
        state["first_request"] = time.time()
        state["cpu_at_first"] = cpu_s()
        state["encode_cpu_at_first"] = state["encode_cpu_s"]
    state["requests"] += 1
    try:
        return await _complete(self, request)
    finally:
        state["last_response"] = time.time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        state["cpu_at_last"] = usage.ru_utime + usage.ru_stime


def report(path: Path) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counts = list(encodes.values())
    path.write_text(json.dumps({
        **state,
        "start": START,
        "end": time.time(),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_mb": peak_rss_mb(),
        "images": len(counts),
        "encodes": sum(counts),
        "max_encodes_per_image": max(counts, default=0),
    }, indent=2))


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    runner._encode = counting_encode
    runner.iter_examples = timed_examples
    runner.finalize = timed_finalize
    report_module.write_report = finalize_module.write_report = timed_report
    runner.count_requests = timed_count
    openai_compat.OpenAICompatAdapter.complete = noting_complete
    atexit.register(report, Path(sys.argv[1]))
    state["main_start"] = time.time()  # the interpreter started and the harness is imported
    try:
        main(sys.argv[2:], prog_name="ubench")
    finally:
        state["main_end"] = time.time()  # what follows is the interpreter's own exit

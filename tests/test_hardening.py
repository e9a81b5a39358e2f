"""Issue 13, bullet by bullet, through the CLI: hostile servers, bad input, two runs on one folder,
damaged caches and disks give a clear error and the documented exit status, lose nothing, and
never write a secret."""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from harness.report.results import read_samples
from harness.servers.hostile import HOSTILE
from harness.servers.testserver import TestServer
from tests.conftest import ROOT, read_jsonl, ubench
from tests.test_robustness import (
    FAKE_KEY,
    SAMPLE_ITEMS,
    _start,
    _wait_for_lines,
    final_records,
    run_args,
    summary,
)

BAD_REPLIES = {"number_content": "bad_content", "object_content": "bad_content",
               "null_content": "null_content", "empty_choices": "no_choices",
               "not_completion": "not_a_completion"}


def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]


def cache_entries(cache_dir: Path) -> list[str]:
    with sqlite3.connect(cache_dir / "responses.sqlite") as db:
        return [row[0] for row in db.execute("SELECT response FROM responses")]


def secret_free(*places: Path, secrets: tuple[str, ...]) -> None:
    """No byte of any secret in any file under `places`."""
    files = [p for place in places for p in Path(place).rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, (path, secret)


# 1. Replies are validated before they are cached or parsed ------------------------------------


def test_bad_replies_are_item_errors_retried_and_never_cached(tmp_path, private_cache):
    out = tmp_path / "run"
    with TestServer("random", fault_rate=1.0, faults=tuple(BAD_REPLIES)) as server:
        proc = ubench(*run_args(server, out, "--limit", "20", "--max-attempts", "2"), check=False)
        assert server.stats.requests == 40  # every item retried once, like a server fault
    no_traceback(proc)
    assert proc.returncode == 3
    records = final_records(out)
    assert len(records) == 20
    assert {r["error"]["type"] for r in records.values()} == {"bad_response"}
    assert {r["error"]["reason"] for r in records.values()} == set(BAD_REPLIES.values())
    assert all(r["error"]["attempts"] == 2 and "response" not in r for r in records.values())
    assert cache_entries(private_cache) == []
    with TestServer("random") as healthy:  # the re-run asks exactly the failed items again
        ubench(*run_args(healthy, out, "--limit", "20"))
        assert healthy.stats.requests == 20
    assert not any(r["error"] for r in final_records(out).values())


def test_list_content_is_joined_and_finish_reasons_are_counted(tmp_path):
    out = tmp_path / "run"
    with TestServer("letter:C", fault_rate=1.0,
                    faults=("list_content", "length", "content_filter", "refusal")) as server:
        proc = ubench(*run_args(server, out, "--limit", "24", "--no-cache"))
    records = final_records(out).values()
    listed = [r for r in records if r["response"] == "C"]
    assert listed and all(r["extracted"] == "C" for r in listed)
    refused = [r for r in records if r["response"].startswith("I can't help")]
    assert refused and all(r["rule"] == "invalid:refusal" for r in refused)
    reasons = Counter(r["finish_reason"] for r in records)
    s = summary(out)
    assert s["finish_reasons"] == {k: reasons[k] for k in ("length", "content_filter") if reasons[k]}
    assert set(s["finish_reasons"]) == {"length", "content_filter"}
    assert "Answers that did not end normally" in proc.stdout


def test_a_cached_entry_that_fails_validation_is_asked_again_and_replaced(tmp_path,
                                                                        private_cache):
    with TestServer("letter:B") as server:
        ubench(*run_args(server, tmp_path / "a", "--limit", "6"))
        with sqlite3.connect(private_cache / "responses.sqlite") as db:
            db.execute("UPDATE responses SET response = '{\"text\": [\"B\"]}' "
                       "WHERE rowid IN (SELECT rowid FROM responses LIMIT 3)")
            db.execute("UPDATE responses SET response = 'not json' "
                       "WHERE rowid IN (SELECT rowid FROM responses LIMIT 1 OFFSET 5)")
        ubench(*run_args(server, tmp_path / "b", "--limit", "6"))
        assert server.stats.requests == 6 + 4
    b = final_records(tmp_path / "b").values()
    assert sum(r["cached"] for r in b) == 2 and all(r["response"] == "B" for r in b)
    assert all(json.loads(text)["text"] == "B" for text in cache_entries(private_cache))


# 2. Bounded response size; long answers ---------------------------------------------------------


def test_endless_and_huge_bodies_are_cut_at_the_limit(tmp_path):
    out = tmp_path / "run"
    with TestServer("random", fault_rate=1.0, faults=("endless", "huge")) as server:
        proc = ubench(*run_args(server, out, "--limit", "4", "--max-attempts", "1",
                                "--max-response-bytes", str(2 * 1024 * 1024)), check=False)
    assert proc.returncode == 3
    records = final_records(out).values()
    assert all(r["error"]["type"] == "too_large" and "2097152" in r["error"]["message"]
               for r in records)
    assert summary(out)["errors_by_type"] == {"too_large": 4}


@pytest.fixture
def shorter_long_answers(monkeypatch):
    """1 MB instead of 5 MB: the same path through the client (read in chunks, parsed in a
    thread), a fifth of the CPU."""
    import harness.servers.hostile as hostile

    monkeypatch.setattr(hostile, "LONG_ANSWER_CHARS", 1_000_000)


def test_a_long_answer_within_the_limit_is_read(tmp_path, shorter_long_answers):
    out = tmp_path / "run"
    with TestServer("letter:D", fault_rate=1.0, faults=("long_answer",)) as server:
        ubench(*run_args(server, out, "--limit", "1", "--no-cache"))
    (record,) = final_records(out).values()
    assert len(record["response"]) > 900_000
    assert (record["extracted"], record["rule"]) == ("D", "final_answer")


# 3. Exit codes ----------------------------------------------------------------------------------


def test_run_help_documents_the_exit_codes():
    text = " ".join(ubench("run", "--help").stdout.split())
    assert "Exit status: 0 every selected item has an answer; 1 the run ended but some items " \
           "are errors" in text
    assert "2 usage or input error, nothing sent; 3 no item could be answered" in text


@pytest.mark.parametrize("url", ["http//127.0.0.1:8000/v1", "127.0.0.1:8000/v1",
                                 "http://127.0.0.1:99999/v1", "ftp://host/v1", "http:///v1"])
def test_a_malformed_url_is_a_usage_error_before_anything_is_sent(tmp_path, url):
    out = tmp_path / "run"
    proc = ubench("run", "--model", "vllm/m", "--base-url", url, "--output", str(out),
                  "--limit", "3", check=False)
    assert proc.returncode == 2 and "--base-url" in proc.stderr
    assert not out.exists()


def test_nothing_listening_stops_after_the_stated_bound_with_exit_3(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    proc = ubench("run", "--model", "vllm/m", "--base-url", f"http://127.0.0.1:{port}/v1",
                  "--output", str(out), "--limit", "3", "--no-progress", check=False)
    assert proc.returncode == 3, proc.stderr
    assert f"nothing answers at http://127.0.0.1:{port}/v1 (8 connections failed" in proc.stderr
    assert len(read_jsonl(out / "samples.jsonl")) >= 1  # the items asked are recorded


# 4. One run per output folder -------------------------------------------------------------------


def test_a_second_run_on_a_busy_folder_is_refused_and_a_killed_run_never_blocks(tmp_path):
    out = tmp_path / "run"
    with TestServer("random", latency_s=0.05) as server:
        first = _start(run_args(server, out, "--concurrency", "2", "--no-cache"))
        _wait_for_lines(out / "samples.jsonl", 5, first)
        for args in (run_args(server, out), ["score", str(out)], ["report", str(out)],
                     ["merge", str(tmp_path / "x"), "--output", str(out)]):
            (tmp_path / "x").mkdir(exist_ok=True)
            proc = ubench(*args, check=False)
            assert proc.returncode == 2, (args, proc.stderr)
            assert f"in use by another ubench process (PID {first.pid})" in proc.stderr
        first.send_signal(signal.SIGKILL)
        first.wait()
        from harness.report.samples_table import SPOOL
        assert not (out / SPOOL).exists()  # the table's spool never outlives its process
        ubench(*run_args(server, out, "--no-cache"))
    records = final_records(out)
    assert len(records) == SAMPLE_ITEMS and not any(r["error"] for r in records.values())


# 5. Secrets -------------------------------------------------------------------------------------


def test_no_byte_of_the_key_or_url_credentials_is_written_anywhere(tmp_path, private_cache):
    key_run, url_run = tmp_path / "key", tmp_path / "url"
    with TestServer("random", fault_rate=0.6, faults=("key_echo", "auth_echo", "key_cut"),
                    retry_after_s=0.01) as server:
        proc = ubench(*run_args(server, key_run, "--limit", "24", "--max-attempts", "1"),
                      env={"VLLM_API_KEY": FAKE_KEY}, check=False)
        creds = server.base_url.replace("http://", "http://alice:pw-S3CRET-42@")
        url_proc = ubench("run", "--model", "vllm/test", "--base-url", creds, "--output",
                          str(url_run), "--limit", "3", "--no-progress")
        assert server.stats.faults["key_echo"] and server.stats.faults["key_cut"]
    assert proc.returncode == 1
    records = final_records(key_run).values()
    echoed = [r for r in records if not r["error"] and "[REDACTED]" in r["response"]]
    assert echoed and all(r["redacted"] for r in echoed)
    assert summary(key_run)["n_redacted"] == len(echoed)
    secret_free(key_run, url_run, private_cache,
                secrets=(FAKE_KEY, FAKE_KEY[:8], "pw-S3CRET-42", "alice:"))
    for text in (proc.stdout, proc.stderr, url_proc.stdout, url_proc.stderr):
        assert FAKE_KEY[:8] not in text and "pw-S3CRET-42" not in text
    manifest = json.loads((url_run / "manifest.json").read_text())
    assert manifest["model"]["base_url"].startswith("http://[REDACTED]@127.0.0.1:")


# 6. Damaged state -------------------------------------------------------------------------------


def test_a_corrupt_cache_is_moved_aside_and_cache_clear_works_on_one(tmp_path, private_cache):
    db = private_cache / "responses.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    with TestServer("random") as server:
        proc = ubench(*run_args(server, tmp_path / "run", "--limit", "5"))
    assert proc.stderr.count("warning: the response cache") == 1 and "moved it aside" in proc.stderr
    (aside,) = private_cache.glob("responses.sqlite.corrupt-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    assert len(cache_entries(private_cache)) == 5
    db.write_bytes(b"garbage again" * 100)
    cleared = ubench("cache", "clear", "--yes")
    assert "deleted 0 cached responses" in cleared.stdout and "moved it aside" in cleared.stderr


def test_a_failing_cache_write_switches_the_cache_off_and_the_run_goes_on(tmp_path,
                                                                         monkeypatch):
    import harness.run.cache as cache_module

    class FullDisk:
        """A connection whose writes fail as SQLite's do on a full disk."""

        def __init__(self, real):
            self.real = real

        def executemany(self, *args):
            raise sqlite3.OperationalError("database or disk is full")

        def __getattr__(self, name):
            return getattr(self.real, name)

    real_connect = sqlite3.connect
    monkeypatch.setattr(cache_module.sqlite3, "connect",
                        lambda *a, **k: FullDisk(real_connect(*a, **k)), raising=True)
    monkeypatch.setattr(cache_module.ResponseCache.__init__, "__defaults__", (None, 0.0))
    with TestServer("random") as server:
        proc = ubench(*run_args(server, tmp_path / "run", "--limit", "12", "--concurrency", "2"))
    assert proc.stderr.count("warning: the response cache") == 1
    assert "database or disk is full" in proc.stderr and "going on without it" in proc.stderr
    assert len(final_records(tmp_path / "run")) == 12


def test_a_full_disk_ends_the_run_in_one_line_and_the_rerun_loses_nothing(tmp_path,
                                                                         monkeypatch):
    import errno

    from harness.report import results

    class FullDisk:
        """The samples file on a disk that fills up after a few records."""

        def __init__(self, real, room: int):
            self.real, self.room = real, room

        def write(self, data: bytes) -> int:
            if self.room <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.room -= 1
            return self.real.write(data)

        def __getattr__(self, name):
            return getattr(self.real, name)

    real_init = results.SampleWriter.__init__

    def on_a_small_disk(self, path):
        real_init(self, path)
        self._file = FullDisk(self._file, room=4)

    out = tmp_path / "run"
    with TestServer("random") as server:
        with monkeypatch.context() as patch:
            patch.setattr(results.SampleWriter, "__init__", on_a_small_disk)
            proc = ubench(*run_args(server, out, "--limit", "10"), check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip() == (f"Error: cannot write {out / 'samples.jsonl'}: "
                                       "No space left on device")
        assert len(read_jsonl(out / "samples.jsonl")) == 4
        ubench(*run_args(server, out, "--limit", "10"))  # space freed: the re-run resumes
    assert len(final_records(out)) == 10


def test_a_size_limited_output_folder_ends_the_run_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    limit = 40_000  # bytes: samples.jsonl passes it after a few dozen records

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with TestServer("random") as server:
        args = run_args(server, out, "--no-cache", "--concurrency", "4")
        proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, preexec_fn=small_files, timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert f"cannot write {out / 'samples.jsonl'}: File too large" in proc.stderr
        no_traceback(proc)
        written = len(list(read_samples(out / "samples.jsonl")))  # a torn last line is dropped
        assert 0 < written < SAMPLE_ITEMS
        asked = server.stats.requests
        ubench(*args)
        assert server.stats.requests - asked <= SAMPLE_ITEMS - written + 4  # + those in flight
    records = final_records(out)
    assert len(records) == SAMPLE_ITEMS and not any(r["error"] for r in records.values())


def test_a_read_only_output_location_is_one_line_and_exit_1(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions; sysfs refuses even root
        target = Path("/sys/ubench-read-only-test/run")
    else:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
        target = parent / "run"
    proc = ubench("run", "--model", "random", "--output", str(target), "--limit", "2",
                  "--no-progress", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: cannot write {target.parent}") or \
        proc.stderr.startswith(f"Error: cannot write {target}")
    assert len(proc.stderr.strip().splitlines()) == 1


# 7. Images --------------------------------------------------------------------------------------


def _png_header_bomb(side: int) -> bytes:
    """A 1-bit PNG of side × side pixels (far above Pillow's bomb limit) in a few KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = zlib.compress(b"\x00" * ((side // 8 + 1) * 64), 9)  # the first rows only: enough
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _local_dataset(tmp_path: Path, edit) -> Path:
    import datasets as hf

    from harness.data.synthetic import all_label_names, make_row, ubench_features

    rng = np.random.default_rng(13)
    rows = [make_row(rng, "kather_et_al_2016", all_label_names()) for _ in range(4)]
    edit(rows)
    data = tmp_path / "data"
    data.mkdir()
    hf.Dataset.from_list(rows, features=ubench_features(all_label_names())).to_parquet(
        str(data / "part.parquet"))
    return data


def test_bombs_and_broken_images_are_their_items_errors_and_big_images_are_downscaled(tmp_path):
    import io

    from PIL import Image

    wide = io.BytesIO()
    Image.new("RGB", (3000, 200), "white").save(wide, format="PNG")

    def edit(rows):
        rows[0]["image"] = {"bytes": _png_header_bomb(20_000), "path": "bomb.png"}
        rows[1]["image"] = {"bytes": b"\x89PNG\r\n\x1a\nbroken", "path": "broken.png"}
        rows[2]["image"] = {"bytes": wide.getvalue(), "path": "wide.png"}

    rows_seen: list = []
    data = _local_dataset(tmp_path, lambda rows: (edit(rows), rows_seen.extend(rows)))
    out = tmp_path / "run"
    with TestServer("random") as server:
        proc = ubench(*run_args(server, out, "--dataset", str(data)), check=False)
    assert proc.returncode == 1
    no_traceback(proc)
    records = final_records(out).values()
    by_image = {row["image_id"]: [r for r in records if r["image_id"] == row["image_id"]]
                for row in rows_seen}
    bomb, broken, wide_records, fine = by_image.values()
    for bad in (bomb, broken):
        assert all(r["error"]["type"] == "bad_input" and r["error"]["field"] == "image"
                   for r in bad)
    assert "decompression bomb" in bomb[0]["error"]["message"]
    assert all(r["image"]["resized"] and (r["image"]["width"], r["image"]["height"]) ==
               (2048, 136) and r["image"]["original_size"] == [3000, 200]
               for r in wide_records)
    assert not any(r["error"] for r in wide_records + fine)
    assert json.loads((out / "manifest.json").read_text())["image"]["max_side"] == 2048
    html = (out / "report.html").read_text()
    thumbs = json.loads(html.split('id="thumbs-data"')[1].split(">", 1)[1].split("</script>")[0])
    assert set(thumbs) == {rows_seen[2]["image_id"], rows_seen[3]["image_id"]}


# 8. Input validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--datasets", "kather_et_al_2061"], "did you mean 'kather_et_al_2016'?"),
    (["--question-types", "stian"], "did you mean 'stain'?"),
    (["--temperature", "-1"], "--temperature"),
    (["--top-p", "2"], "--top-p"),
    (["--top-p", "0"], "--top-p"),
    (["--timeout", "0"], "--timeout"),
    (["--concurrency", "0"], "--concurrency"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--serve-timeout", "-5"], "--serve-timeout"),
])
def test_bad_options_exit_2_with_what_is_valid_and_leave_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    proc = ubench("run", "--model", "random", "--output", str(out), "--no-progress", *args,
                  check=False)
    assert proc.returncode == 2 and message in proc.stderr
    no_traceback(proc)
    assert not (out / "manifest.json").exists()
    if args[0] == "--datasets":
        assert "valid: acevedo_et_al_2020" in proc.stderr
        ubench("run", "--model", "random", "--output", str(out), "--no-progress",
               "--datasets", "kather_et_al_2016")  # the corrected command needs no --force


def test_every_option_of_every_command_has_help():
    from harness.cli import main

    def commands(group):
        for command in group.commands.values():
            yield from commands(command) if hasattr(command, "commands") else [command]

    missing = [f"{c.name} {p.name}" for c in commands(main) for p in c.params
               if getattr(p, "param_type_name", "") == "option" and not p.help]
    assert missing == []


def test_file_and_jsonl_inputs_are_checked(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    proc = ubench("run", "--model", "random", "--output", str(a_file), check=False)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr
    data = tmp_path / "in.jsonl"
    data.write_text('{"response": "A", "options": ["x", "y"]}\n')
    proc = ubench("extract", "-i", str(data), "-o", str(data), check=False)
    assert proc.returncode == 2 and "is the --input file" in proc.stderr
    assert data.read_text() == '{"response": "A", "options": ["x", "y"]}\n'
    run = tmp_path / "scored"
    run.mkdir()
    with TestServer("random") as server:
        ubench(*run_args(server, tmp_path / "good", "--limit", "3"))
    lines = (tmp_path / "good" / "samples.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["item_id"]
    (run / "samples.jsonl").write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n")
    proc = ubench("score", str(run), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"Error: {run / 'samples.jsonl'}:2: missing field(s) item_id"


def test_duplicate_image_ids_exit_2_naming_them(tmp_path):
    def edit(rows):
        rows[3]["image_id"] = rows[1]["image_id"]

    data = _local_dataset(tmp_path, edit)
    out = tmp_path / "run"
    proc = ubench("run", "--model", "random", "--dataset", str(data), "--output", str(out),
                  check=False)
    dup = pq_image_ids(data)[1]
    assert proc.returncode == 2 and f"image_id values appear in more than one row ('{dup}')" \
        in proc.stderr
    assert not (out / "manifest.json").exists()


def pq_image_ids(data: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(data / "part.parquet", columns=["image_id"]).column(0).to_pylist()


def test_dataset_names_are_escaped_wherever_printed(tmp_path):
    def edit(rows):
        for row in rows[:2]:
            row["dataset"] = "lab/a|b<i>"

    data = _local_dataset(tmp_path, edit)
    out = tmp_path / "run"
    ubench("run", "--model", "random", "--dataset", str(data), "--output", str(out),
           "--no-progress")
    md = (out / "summary.md").read_text()
    (row,) = [line for line in md.splitlines() if line.startswith("| lab")]
    assert row.startswith("| lab/a\\|b&lt;i> |") and row.count(" | ") == 6
    html = (out / "report.html").read_text()
    assert "lab/a|b&lt;i&gt;" in html and "lab/a|b<i>" not in html.split("<script")[0]


@pytest.mark.parametrize("env, message", [
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
    ({"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
     "cannot reach the Hugging Face Hub at http://127.0.0.1:9"),
])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_the_hub_offline_fails_in_one_line(tmp_path, env, message, dry_run):
    out = tmp_path / "run"
    proc = ubench("run", "--model", "random", "--dataset", "hub", "--output", str(out),
                  "--no-progress", *dry_run, env=env, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (out / "manifest.json").exists() and not (out / "estimate.json").exists()


# 9. Error classes -------------------------------------------------------------------------------


def test_a_rejected_key_stops_at_once_naming_the_variable(tmp_path):
    with TestServer("random", require_key="sk-the-right-one") as server:
        proc = ubench(*run_args(server, tmp_path / "r", "--concurrency", "1"),
                      env={"VLLM_API_KEY": FAKE_KEY}, check=False)
        assert server.stats.requests == 1
    assert proc.returncode == 3
    assert "stopping: HTTP 401" in proc.stderr and "check the key in $VLLM_API_KEY" in proc.stderr
    assert summary(tmp_path / "r")["errors_by_type"] == {"auth": 1}
    with TestServer("random", require_key="sk-1") as one, \
            TestServer("random", require_key="sk-1") as two:  # replicas share the key
        proc = ubench("run", "--model", "vllm/test", "--base-url", one.base_url, "--base-url",
                      two.base_url, "--output", str(tmp_path / "pool"), "--concurrency", "1",
                      "--no-progress", env={"VLLM_API_KEY": FAKE_KEY}, check=False)
        assert one.stats.requests + two.stats.requests == 1
    assert proc.returncode == 3 and "check the key in $VLLM_API_KEY" in proc.stderr


def test_client_errors_are_never_retried_and_counted_by_class(tmp_path):
    out = tmp_path / "run"
    with TestServer("random", fault_rate=0.5, faults=("400", "404", "413", "422")) as server:
        proc = ubench(*run_args(server, out, "--limit", "16", "--max-attempts", "5"),
                      check=False)
        assert server.stats.requests == 16
    assert proc.returncode == 1
    records = final_records(out).values()
    errors = [r["error"] for r in records if r["error"]]
    assert errors and all(e["type"] == "client" and e["attempts"] == 1 for e in errors)
    assert {e["status"] for e in errors} <= {400, 404, 413, 422}
    assert summary(out)["errors_by_type"] == {"client": len(errors)}
    assert "| client |" in (out / "summary.md").read_text()


# 10. Every misbehaviour at once -----------------------------------------------------------------


def test_a_server_mixing_every_hostile_mode(tmp_path, private_cache, shorter_long_answers):
    """One record per item, bounded memory, no traceback, exit 1, no secret written."""
    out = tmp_path / "run"
    modes = tuple(m for m in HOSTILE if m not in ("401", "403"))  # those stop the run (test above)
    with TestServer("random", fault_rate=0.7, faults=modes + ("429", "500", "close", "badjson"),
                    retry_after_s=0.01) as server:
        proc = ubench(*run_args(server, out, "--limit", "40", "--max-attempts", "2"),
                      env={"VLLM_API_KEY": FAKE_KEY, "UBENCH_CACHE_DIR": str(private_cache)},
                      check=False, subprocess_=True)
        seen = set(server.stats.faults)
    assert proc.returncode == 1
    no_traceback(proc)
    assert len(seen & set(modes)) >= 12
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == len({r["item_id"] for r in records}) == 40
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 1024, peak_mb
    secret_free(out, private_cache, secrets=(FAKE_KEY, FAKE_KEY[:8]))

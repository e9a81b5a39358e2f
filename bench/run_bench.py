"""The benchmark: is the harness ever the bottleneck? Prints the tables of README's Performance section.

    python bench/run_bench.py [--items 2000] [--latency-items 40000] [--full-items all]

1. Generates (or reuses) the full-size synthetic replica (17,315 rows, ~96k items) in bench/out/replica.
2. Starts the project's test server (`harness.servers.testserver`, its own process, so its CPU is not ours)
   answering after 0 ms, then 200 ms.
3. Runs `ubench run` (through bench/probe.py, which counts encodes per image, CPU spent reading and
   encoding, and the first request) at concurrency 64: on the whole replica at 0 ms (throughput,
   CPU per item, time to first request, peak RSS), and on `--latency-items` items at 200 ms
   (efficiency against the bound N·L/C).
4. On the first `--items` items, side by side against the same server at 0 ms: ubench, two bare
   loops (aiohttp + orjson: the floor of any Python client; the openai SDK's `AsyncOpenAI`),
   inspect_ai and lmms-eval (each installed into bench/.venvs/NAME on first use), all at
   concurrency 64, each a separate process whose CPU time is measured. Every client scores
   the same items; the test server always answers the first option letter, so equal accuracies
   show that all of them asked the same questions.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.data.items import iter_examples  # noqa: E402
from harness.data.sources import iter_rows, resolve_source  # noqa: E402
from harness.data.synthetic import REPLICA_ROWS, write_replica  # noqa: E402
from harness.prompts import load_template, render  # noqa: E402

OUT = ROOT / "bench" / "out"
VENVS = ROOT / "bench" / ".venvs"
PEERS = ROOT / "bench" / "peers"
PY = sys.executable
# What each peer needs in its own virtual environment (see shared notes: lmms-eval runs only
# without torchvision and with filelock < 4; torch must be the local CPU wheel, pinned exactly).
PEER_PACKAGES = {
    "inspect_ai": (["inspect-ai", "openai", "aiohttp"], []),
    "lmms_eval": (["lmms-eval", "torch==2.13.0", "filelock<4"], ["torchvision"]),
}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measured(cmd: list[str], *, env: dict[str, str] | None = None, log: Path) -> dict[str, float]:
    """Run `cmd` to completion; its wall time and CPU time (user + system, with its children)."""
    cpu0, start = children_cpu(), time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=f,
                              stderr=subprocess.STDOUT)
    wall, cpu = time.time() - start, children_cpu() - cpu0
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}); log {log}:\n{tail}")
    return {"start": start, "wall_s": wall, "cpu_s": cpu}


@contextmanager
def test_server(latency_s: float) -> Iterator[str]:
    proc = subprocess.Popen([PY, "-m", "harness.servers.testserver", "--style", "first",
                             "--latency", str(latency_s)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)


def ensure_replica(path: Path) -> str:
    """Reuse a replica there (any size: `bench/make_replica.py --rows N` makes a smaller one)."""
    shards = sorted(path.glob("ubench-replica-*.parquet"))
    if shards and shards[0].name.endswith(f"-of-{len(shards):05d}.parquet"):
        import pyarrow.parquet as pq

        rows = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
        return f"{rows:,} rows, reused"
    start = time.time()
    write_replica(path, REPLICA_ROWS, workers=os.cpu_count() or 2)
    return f"{REPLICA_ROWS:,} rows, generated in {time.time() - start:.0f} s"


def export_subset(replica: Path, n: int) -> Path:
    """The first `n` items as files any client can read: items.jsonl (official prompt text, gold
    letter) and one image file per image."""
    out = OUT / f"subset-{n}"
    if (out / "items.jsonl").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    template = load_template("official")
    lines = []
    for ex in iter_examples(iter_rows(resolve_source(str(replica))), limit=n):
        ext = "jpg" if ex.image_bytes[:3] == b"\xff\xd8\xff" else "png"
        image = f"images/{ex.image_id}.{ext}"
        (out / image).write_bytes(ex.image_bytes)
        for item in ex.items:
            (text,) = [p["text"] for m in render(template, item.question, item.option_map)
                       for p in m["content"] if p["type"] == "text"]
            lines.append(json.dumps({"id": item.item_id, "image": image, "prompt": text,
                                     "gold": item.gold_letter}))
    (out / "items.jsonl").write_text("\n".join(lines) + "\n")
    return out


def ensure_venv(name: str) -> Path:
    venv = VENVS / name
    python = venv / "bin" / "python"
    if (venv / ".installed").exists():
        return python
    install, remove = PEER_PACKAGES[name]
    print(f"installing {name} into {venv} (once) ...", flush=True)
    subprocess.run([PY, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *install], check=True)
    if remove:
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", *remove], check=True)
    (venv / ".installed").touch()
    return python


# ---------------------------------------------------------------------------------------------
# The clients


def run_ours(name: str, url: str, replica: Path, limit: int | None,
             *extra: str) -> dict[str, Any]:
    """`ubench run` with its defaults (response cache on, in a fresh folder so nothing is a hit)."""
    out, cache = OUT / "runs" / name, OUT / "runs" / f"{name}.cache"
    report = OUT / "runs" / f"{name}.probe.json"
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [PY, "bench/probe.py", str(report), "run", "--model", "vllm/test", "--base-url", url,
           "--dataset", str(replica), "--concurrency", "64", "--max-tokens", "16",
           "--output", str(out), "--force", "--no-progress", *extra]
    if limit:
        cmd += ["--limit", str(limit)]
    result = measured(cmd, env={"UBENCH_CACHE_DIR": str(cache)}, log=OUT / "runs" / f"{name}.log")
    probe = json.loads(report.read_text())
    records = [json.loads(line) for line in (out / "samples.jsonl").open()]
    errors = sum(bool(r["error"]) for r in records)
    return {**result, "probe": probe, "items": len(records), "errors": errors,
            "accuracy": sum(bool(r.get("correct")) for r in records) / len(records)}


def run_bare(kind: str, url: str, subset: Path, name: str = "") -> dict[str, Any]:
    name = name or f"bare-{kind}"
    answers = OUT / "runs" / f"{name}.jsonl"
    result = measured([PY, str(PEERS / "bare_loop.py"), kind, str(subset), url, "64", str(answers)],
                      log=OUT / "runs" / f"{name}.log")
    records = [json.loads(line) for line in answers.open()]
    return {**result, "items": len(records),
            "accuracy": sum(r["correct"] for r in records) / len(records)}


def run_inspect(url: str, subset: Path) -> dict[str, Any]:
    python = ensure_venv("inspect_ai")
    logs = OUT / "runs" / "inspect_logs"
    shutil.rmtree(logs, ignore_errors=True)
    result = measured(
        [str(python), "-m", "inspect_ai", "eval", "bench/peers/inspect_task.py",
         "--model", "openai-api/ubench/test", "--max-connections", "64", "--max-samples", "64",
         "--max-retries", "3", "--log-dir", str(logs), "--log-format", "json",
         "--display", "none", "--log-level", "warning"],
        env={"UBENCH_API_KEY": "EMPTY", "UBENCH_BASE_URL": url, "UBENCH_SUBSET": str(subset),
             "INSPECT_LOG_LEVEL": "warning"},
        log=OUT / "runs" / "inspect.log")
    (log,) = logs.glob("*.json")
    data = json.loads(log.read_text())
    score = data["results"]["scores"][0]["metrics"]["accuracy"]["value"]
    return {**result, "items": data["results"]["completed_samples"], "accuracy": score}


def run_lmms(url: str, subset: Path) -> dict[str, Any]:
    python = ensure_venv("lmms_eval")
    task_dir = subset / "lmms_task"
    task_dir.mkdir(exist_ok=True)
    shutil.copy(PEERS / "lmms_utils.py", task_dir / "utils.py")
    (task_dir / "ubench_mcq.yaml").write_text(f"""task: ubench_mcq
dataset_path: json
dataset_kwargs:
  data_files:
    test: {subset / "items.jsonl"}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: gold
generation_kwargs:
  max_new_tokens: 16
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
""")
    results = OUT / "runs" / "lmms_results"
    shutil.rmtree(results, ignore_errors=True)
    result = measured(
        [str(python), "-m", "lmms_eval", "--model", "openai",
         "--model_args", f"model=test,base_url={url},api_key=EMPTY,num_concurrent=64",
         "--tasks", "ubench_mcq", "--include_path", str(task_dir), "--batch_size", "1",
         "--output_path", str(results)],
        env={"UBENCH_SUBSET": str(subset), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
             "TOKENIZERS_PARALLELISM": "false"},
        log=OUT / "runs" / "lmms.log")
    (path,) = results.rglob("*results.json")
    scores = json.loads(path.read_text())["results"]["ubench_mcq"]
    n = json.loads(path.read_text())["n-samples"]["ubench_mcq"]["effective"]
    return {**result, "items": n, "accuracy": scores["accuracy,none"]}


# ---------------------------------------------------------------------------------------------
# Report


def speed_line(label: str, r: dict[str, Any], latency_s: float) -> str:
    p, n = r["probe"], r["items"]
    bound = n * latency_s / 64
    steady = p["last_response"] - p["first_request"]
    eff = f"{bound / r['wall_s']:.3f} | {bound / steady:.3f}" if latency_s else "– | –"
    return (f"| {label} | {n:,} | {r['errors']} | {r['wall_s']:.1f} | {n / r['wall_s']:,.0f} | "
            f"{n / steady:,.0f} | {bound:.1f} | {eff} | {p['first_request'] - r['start']:.2f} | "
            f"{p.get('max_rss_mb_at_last') or 0:,.0f} / {p['max_rss_mb']:,.0f} | "
            f"{p['encodes'] / p['images']:.2f} "
            f"(max {p['max_encodes_per_image']}) |")


def phase_line(label: str, r: dict[str, Any], latency_s: float, floor: dict[str, Any]) -> str:
    """Whole run (process start → exit) against the request phase (first request → last answer),
    and the share of the run spent before the first request and after the last answer."""
    n, wall = r["items"], r["wall_s"]
    bound = n * latency_s / 64
    floor_eff = floor["items"] * latency_s / 64 / floor["wall_s"]
    p = r.get("probe")
    if p is None:  # the bare loop: only its whole run is known
        return (f"| {label} | {n:,} | {bound:.1f} | {wall:.1f} | {bound / wall:.3f} | "
                f"{bound / wall / floor_eff:.3f} | – | – | – | – | – | – |")
    before = p["first_request"] - r["start"]
    after = r["start"] + wall - p["last_response"]
    steady = p["last_response"] - p["first_request"]
    rss_req, rss_end = p.get("max_rss_mb_at_last") or 0, p["max_rss_mb"]
    return (f"| {label} | {n:,} | {bound:.1f} | {wall:.1f} | **{bound / wall:.3f}** | "
            f"{bound / wall / floor_eff:.3f} | {bound / steady:.3f} | {before:.2f} | "
            f"{after:.2f} | **{100 * (before + after) / wall:.1f}%** | "
            f"{p['summary_wall_s']:.2f} / {p['report_wall_s']:.2f} | "
            f"{rss_req:,.0f} / {rss_end:,.0f} (**{rss_end / rss_req if rss_req else 0:.2f}×**) |")


def print_phases(runs: dict[str, dict[str, Any]], latency_s: float) -> None:
    print(f"\nThe whole run at L = {latency_s * 1e3:.0f} ms, concurrency 64, against N·L/C; the bare "
          "aiohttp loop on the same items and server is the floor. Targets: whole-run efficiency "
          "≥ 0.90, start + end ≤ 3% of the run, peak RSS at the end ≤ 1.2× the request phase's.\n")
    print("| run | items | bound N·L/C s | wall s, process start → exit | whole-run efficiency | "
          "÷ the floor's | request-phase efficiency | before first request s | "
          "after last answer s | start + end share | finalize / report s | "
          "peak RSS MB: requests / end (ratio) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(phase_line("ubench run", runs["lat"], latency_s, runs["bare-lat"]))
    print(phase_line("bare aiohttp + orjson loop (the floor)", runs["bare-lat"], latency_s,
                     runs["bare-lat"]))
    r = runs["lat"]
    p, end = r["probe"], r["start"] + r["wall_s"]
    print(f"\nubench's start: {p['main_start'] - r['start']:.2f} s to start the interpreter and "
          f"import the harness, {p['first_request'] - p['main_start']:.2f} s from the command to "
          f"its first request ({p['cpu_at_first']:.2f} s of CPU in all). Its end: "
          f"{p['finalize_start'] - p['last_response']:.2f} s closing the pipeline, "
          f"{p['finalize_end'] - p['finalize_start']:.2f} s summaries and report "
          f"({p['report_wall_s']:.2f} s of it the report; {p['summary_cpu_s']:.2f} s of CPU), "
          f"{p['main_end'] - p['finalize_end']:.2f} s printing the summary, "
          f"{end - p['main_end']:.2f} s the interpreter's exit.")


def cpu_line(label: str, r: dict[str, Any]) -> str:
    """Where the harness's CPU went: ms per item, then one-off costs in seconds."""
    p, n = r["probe"], r["items"]
    steady = (p["cpu_at_last"] - p["cpu_at_first"]
              - (p["encode_cpu_s"] - p["encode_cpu_at_first"]))
    ms = lambda v: f"{v / n * 1e3:.3f}"  # noqa: E731
    return (f"| {label} | {r['cpu_s']:.1f} | {ms(r['cpu_s'])} | "
            f"{ms(r['cpu_s'] - p['encode_cpu_s'])} | **{ms(steady)}** | "
            f"{ms(p['encode_cpu_s'])} | {p['cpu_at_first']:.1f} | {p['count_cpu_s']:.1f} | "
            f"{p['summary_cpu_s'] - p['report_cpu_s']:.1f} | {p['report_cpu_s']:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", type=Path, default=OUT / "replica")
    parser.add_argument("--items", type=int, default=2000,
                        help="items for the side-by-side comparison with the peers")
    parser.add_argument("--latency-items", default="40000",
                        help="items for the 200 ms run ('all' for the whole replica)")
    parser.add_argument("--full-items", default="all",
                        help="items for the 0 ms run that measures RSS and time to first request")
    parser.add_argument("--peers", default="bare-aiohttp,bare-sdk,inspect_ai,lmms_eval",
                        help="comma list of peers to compare (empty for none)")
    parser.add_argument("--phases-only", action="store_true",
                        help="only the L = 200 ms run and its bare-loop floor (the phases table)")
    args = parser.parse_args(argv)
    (OUT / "runs").mkdir(parents=True, exist_ok=True)
    limit = lambda v: None if v == "all" else int(v)  # noqa: E731

    replica_state = ensure_replica(args.replica)
    runs: dict[str, dict[str, Any]] = {}
    if args.phases_only:
        lat_subset = export_subset(args.replica, int(args.latency_items))
        with test_server(0.2) as url:
            runs["lat"] = run_ours("ours-L200", url, args.replica, limit(args.latency_items))
            runs["bare-lat"] = run_bare("aiohttp", url, lat_subset, "bare-aiohttp-L200")
        (OUT / "runs" / "bench-phases.json").write_text(json.dumps(runs, indent=2))
        print(f"\nReplica: {replica_state}; {os.cpu_count()} cores.")
        print_phases(runs, 0.2)
        return
    subset = export_subset(args.replica, args.items)
    peers = [p for p in args.peers.split(",") if p]
    with test_server(0.0) as url:
        runs["full0"] = run_ours("ours-full-L0", url, args.replica, limit(args.full_items))
        runs["ours"] = run_ours("ours-subset-L0", url, args.replica, args.items)
        runs["nocache"] = run_ours("ours-subset-L0-nocache", url, args.replica, args.items,
                                   "--no-cache")
        for peer in peers:
            runs[peer] = {"bare-aiohttp": partial(run_bare, "aiohttp"),
                          "bare-sdk": partial(run_bare, "sdk"), "inspect_ai": run_inspect,
                          "lmms_eval": run_lmms}[peer](url, subset)
    with test_server(0.2) as url:
        runs["lat"] = run_ours("ours-L200", url, args.replica, limit(args.latency_items))
        runs["bare-lat"] = run_bare("aiohttp", url, export_subset(args.replica, runs["lat"]["items"]),
                                    "bare-aiohttp-L200")
    (OUT / "runs" / "bench.json").write_text(json.dumps(runs, indent=2))

    full = runs["full0"]["items"]
    print(f"\nReplica: {replica_state}; test server in its own process "
          f"(style `first`); concurrency 64; {os.cpu_count()} cores; ubench with its defaults "
          "(response cache on, empty).\n")
    print("| run | items | errors | wall s | items/s | items/s, first request → last answer | "
          "bound N·L/C s | efficiency | efficiency, first request → last answer | "
          "first request after s | peak RSS MB: requests / with summary and report | "
          "encodes per image |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(speed_line(f"L = 0, {'whole replica' if args.full_items == 'all' else f'{full:,} items'}",
                     runs["full0"], 0.0))
    print(speed_line("L = 200 ms", runs["lat"], 0.2))
    print(speed_line(f"L = 0, first {args.items:,} items", runs["ours"], 0.0))
    print(speed_line(f"L = 0, first {args.items:,} items, --no-cache", runs["nocache"], 0.0))
    print("\nubench's own CPU (user + system), in ms per item except the last four columns "
          "(seconds, once per run). Steady state: from the first request to the last answer, "
          "reading rows included, image encoding not.\n")
    print("| run | CPU s | total | without image encoding | **steady state** | "
          "encoding images | start-up until the first request s | "
          "counting pass s (concurrent) | summary s | report s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(cpu_line("L = 0, replica", runs["full0"]))
    print(cpu_line("L = 200 ms", runs["lat"]))
    print(cpu_line(f"L = 0, first {args.items:,}", runs["ours"]))
    print(cpu_line(f"L = 0, first {args.items:,}, --no-cache", runs["nocache"]))
    print_phases(runs, 0.2)
    ours = runs["ours"]
    print(f"\nSide by side on the same {ours['items']:,} items, same server, L = 0, "
          "concurrency 64 (ratios: peer ÷ ubench):\n")
    print("| client | items | accuracy | wall s | CPU s | CPU ms/item | wall ratio | CPU ratio | "
          "ubench's throughput ÷ peer's |")
    print("|---|---|---|---|---|---|---|---|---|")
    names = {"ours": "ubench", "bare-aiohttp": "bare aiohttp + orjson loop (the floor)",
             "bare-sdk": "bare AsyncOpenAI loop", "inspect_ai": "inspect_ai",
             "lmms_eval": "lmms-eval"}
    for key in ["ours", *peers]:
        r = runs[key]
        print(f"| {names[key]} | {r['items']:,} | {r['accuracy']:.4f} | {r['wall_s']:.1f} | "
              f"{r['cpu_s']:.1f} | {r['cpu_s'] / r['items'] * 1e3:.2f} | "
              f"{r['wall_s'] / ours['wall_s']:.2f} | {r['cpu_s'] / ours['cpu_s']:.2f} | "
              f"{(ours['items'] / ours['wall_s']) / (r['items'] / r['wall_s']):.2f} |")


if __name__ == "__main__":
    main()

"""Run an evaluation: stream items → render → adapter (with retries) → parse → score → records.

A bounded queue between one producer (reads rows, encodes each image once, renders every question
about it) and `concurrency` workers keeps memory flat whatever the dataset size. Every finished item
is written at once, so a re-run of the same command resumes where the last one stopped.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import Adapter, AdapterError, ChatRequest, GenerationParams, create_adapter
from prompts import Template, TemplateError, load_template, render

from . import __version__, options_order
from .data import Example, Item, iter_examples, iter_rows, resolve_source
from .images import ImageError, encode_image
from .parsing import parse_answer
from .results import (MANIFEST, SAMPLES, SUMMARY_JSON, SUMMARY_MD, SampleWriter, read_json,
                      read_samples, write_json, write_text)
from .retry import RetryPolicy
from .scoring import official_correct, summarize
from .tables import summary_markdown

# Fields of the manifest that must match for a run folder to be resumed.
RESUME_KEYS = ("model", "template", "generation", "dataset", "selection", "image", "options_order")
ABORT_AFTER_SAME_FAILURES = 8


class RunError(Exception):
    """A run that cannot start or must stop; the message says what to do."""


@dataclass
class RunConfig:
    model: str
    output: Path
    dataset: str = "sample"
    revision: str | None = None
    prompt: str = "official"
    base_url: str | None = None
    api_key_env: str | None = None
    datasets: list[str] | None = None
    question_types: list[str] | None = None
    limit: int | None = None
    include_excluded: bool = False
    concurrency: int = 32
    temperature: float = 0.0
    max_tokens: int = 1024
    top_p: float | None = None
    seed: int = 0
    timeout: float = 120.0
    max_attempts: int = 6
    image_format: str = "auto"
    max_pixels: int | None = None
    image_detail: str | None = None
    shuffle_options: int | None = None
    circular: bool = False
    force: bool = False
    progress: bool = True
    command_line: list[str] = field(default_factory=lambda: list(sys.argv))

    @property
    def params(self) -> GenerationParams:
        return GenerationParams(self.temperature, self.max_tokens, self.top_p, self.seed)


@dataclass
class Progress:
    """Live counters for the progress bar and the final message."""

    done: int = 0
    correct: int = 0
    errors: int = 0
    retries: int = 0
    skipped: int = 0
    same_failure: tuple[str, int] = ("", 0)
    successes: int = 0


@dataclass
class Variant:
    """One template's run inside a pipeline: where its records go, and the items already done."""

    template: Template
    writer: SampleWriter
    done: set[str]


def run(config: RunConfig) -> dict[str, Any]:
    """Run (or resume) an evaluation into `config.output`; returns the summary."""
    return _run_sync(config, [(config.prompt, Path(config.output))])[0]


def run_prompts(config: RunConfig, prompts: list[str]) -> dict[str, dict[str, Any]]:
    """A prompt study: every template on the same items, into `config.output/<template name>/`.

    One pipeline serves all variants, so each image is read and encoded once for all of them.
    Returns the summaries by template name.
    """
    try:
        names = [load_template(p).name for p in prompts]
    except TemplateError as exc:
        raise RunError(str(exc)) from exc
    if len(set(names)) != len(names):
        raise RunError(f"--prompt names the same template twice ({', '.join(names)})")
    outs = [Path(config.output) / name for name in names]
    return dict(zip(names, _run_sync(config, list(zip(prompts, outs)))))


def _run_sync(config: RunConfig, specs: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    try:
        return asyncio.run(_run(config, specs))
    except KeyboardInterrupt:
        print(f"\nInterrupted. Everything finished so far is saved in {config.output}; "
              "run the same command again to resume.", file=sys.stderr)
        raise


async def _run(config: RunConfig, specs: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    source = resolve_source(config.dataset, config.revision)
    try:
        templates = [load_template(prompt) for prompt, _ in specs]
    except TemplateError as exc:
        raise RunError(str(exc)) from exc
    try:
        adapter = create_adapter(config.model, base_url=config.base_url,
                                 api_key_env=config.api_key_env, seed=config.seed,
                                 timeout=config.timeout, concurrency=config.concurrency,
                                 image_detail=config.image_detail)
    except ValueError as exc:
        raise RunError(str(exc)) from exc
    outs = [out for _, out in specs]
    done = []
    for template, out in zip(templates, outs):
        manifest = build_manifest(config, source.describe(), template, adapter)
        done.append(prepare_output(out, manifest, config.force))
        write_json(out / MANIFEST, manifest)

    rows = iter_rows(source)
    examples = iter_examples(rows, datasets=config.datasets, question_types=config.question_types,
                             limit=config.limit, include_excluded=config.include_excluded)
    examples = options_order.transform(examples, shuffle_seed=config.shuffle_options,
                                       circular=config.circular)
    progress = Progress(skipped=sum(map(len, done)))
    try:
        with ExitStack() as stack:
            variants = [Variant(t, stack.enter_context(SampleWriter(out / SAMPLES)), d)
                        for t, out, d in zip(templates, outs, done)]
            await _pipeline(config, examples, variants, adapter, progress)
    finally:
        await adapter.aclose()
    return [finalize(out) for out in outs]


async def _pipeline(config: RunConfig, examples, variants: list[Variant], adapter: Adapter,
                    progress: Progress) -> None:
    from tqdm.auto import tqdm

    queue: asyncio.Queue = asyncio.Queue(maxsize=2 * config.concurrency)
    policy = RetryPolicy(max_attempts=config.max_attempts)
    bar = tqdm(desc="ubench", unit="item", disable=not config.progress, dynamic_ncols=True)
    abort: list[str] = []

    def on_retry(_: AdapterError) -> None:
        progress.retries += 1

    def emit(writer: SampleWriter, record: dict[str, Any]) -> None:
        writer.write(record)
        progress.done += 1
        if record.get("error"):
            progress.errors += 1
        else:
            progress.correct += bool(record["correct"])
        bar.update(1)
        scored = progress.done - progress.errors
        bar.set_postfix(acc=f"{progress.correct / scored:.3f}" if scored else "–",
                        retries=progress.retries, errors=progress.errors, refresh=False)

    async def produce() -> None:
        it = iter(examples)
        while not abort:
            example = await asyncio.to_thread(next, it, None)
            if example is None:
                break
            pending = [(v, i) for v in variants for i in example.items if i.item_id not in v.done]
            if not pending:
                continue
            bar.total = (bar.total or 0) + len(pending)
            image, image_error = await asyncio.to_thread(_encode, example, config)
            for variant, item in pending:
                await queue.put((variant, item, image, image_error))
        for _ in range(config.concurrency):
            await queue.put(None)

    async def work() -> None:
        while True:
            entry = await queue.get()
            if entry is None:
                return
            variant, item, image, image_error = entry
            if abort:
                continue  # drain: the run is stopping
            record = await _evaluate(item, image, image_error, variant.template, adapter, config,
                                     policy, on_retry)
            emit(variant.writer, record)
            _watch_failures(record, progress, abort)

    producer = asyncio.create_task(produce())
    workers = [asyncio.create_task(work()) for _ in range(config.concurrency)]
    try:
        await asyncio.gather(producer, *workers)
    finally:
        for task in (producer, *workers):
            task.cancel()
        bar.close()
    if abort:
        raise RunError(abort[0])


def _encode(example: Example, config: RunConfig):
    """Encode the image once for all its questions; a bad image becomes an error per item."""
    if example.image_problem:
        return None, example.image_problem
    try:
        return encode_image(example.image_bytes, image_format=config.image_format,
                            max_pixels=config.max_pixels), None
    except ImageError as exc:
        return None, f"field 'image': {exc}"


async def _evaluate(item: Item, image, image_error: str | None, template: Template,
                    adapter: Adapter, config: RunConfig, policy: RetryPolicy,
                    on_retry) -> dict[str, Any]:
    record = base_record(item, template)
    if item.problem or image_error:
        record["error"] = {"type": "bad_input", "status": None, "attempts": 0,
                           "message": f"item {item.item_id}: {item.problem or image_error}"}
        return record
    try:
        messages = render(template, item.question, item.option_map)
    except (KeyError, ValueError, IndexError) as exc:
        record["error"] = {"type": "bad_input", "status": None, "attempts": 0,
                           "message": f"item {item.item_id}: template {template.name!r} "
                                      f"failed to render: {exc}"}
        return record
    record["prompt"] = messages
    record["image"] = image.describe()
    request = ChatRequest(item.item_id, messages, image.data_url, config.params, item.letters)
    try:
        response = await policy.call(lambda: adapter.complete(request), on_retry)
    except AdapterError as exc:
        record["error"] = exc.as_record()
        return record
    extraction = parse_answer(response.text, item.option_map)
    record.update({
        "response": response.text,
        "finish_reason": response.finish_reason,
        "extracted": extraction.letter,
        "rule": extraction.rule,
        "correct": extraction.letter == item.gold_letter,
        "correct_official": official_correct(response.text, item.gold_letter,
                                             item.options[item.gold_index]),
        "usage": response.usage,
        "latency_s": round(response.latency_s, 4),
        "attempts": response.attempts,
    })
    return record


def base_record(item: Item, template: Template) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "image_id": item.image_id,
        "dataset": item.dataset,
        "question_type": item.question_type,
        "template": template.name,
        "template_sha256": template.sha256,
        "options": item.option_map,
        "gold": item.gold_letter,
        "option_order": list(item.option_order) if item.option_order else None,
        "rotation": item.rotation,
        "data_warning": item.warning,
        "error": None,
    }


def _watch_failures(record: dict[str, Any], progress: Progress, abort: list[str]) -> None:
    """Stop early when every request so far fails the same non-retryable way (wrong key, model)."""
    err = record.get("error")
    if not err:
        progress.successes += 1
        progress.same_failure = ("", 0)
        return
    if err["type"] == "bad_input" or progress.successes:
        return
    key = f"{err['type']}:{err.get('status')}:{err['message']}"
    same, count = progress.same_failure
    progress.same_failure = (key, count + 1 if key == same else 1)
    if progress.same_failure[1] >= ABORT_AFTER_SAME_FAILURES:
        abort.append(f"stopping: the first {progress.same_failure[1]} requests all failed with "
                     f"{err['message']} (check the model name, base URL and API key)")


# ---------------------------------------------------------------------------------------------
# Manifest, resume, summary


def build_manifest(config: RunConfig, dataset: dict[str, str], template: Template,
                   adapter: Adapter) -> dict[str, Any]:
    return {
        "harness_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command_line": _redact_cmdline(config.command_line),
        "model": adapter.describe(),
        "template": template.describe(),
        "generation": config.params.as_dict(),
        "seed": config.seed,
        "dataset": dataset,
        "selection": {"datasets": config.datasets, "question_types": config.question_types,
                      "limit": config.limit, "include_excluded": config.include_excluded},
        "image": {"format": config.image_format, "max_pixels": config.max_pixels},
        "options_order": {"shuffle_seed": config.shuffle_options, "circular": config.circular},
        "runtime": {"concurrency": config.concurrency, "timeout_s": config.timeout,
                    "max_attempts": config.max_attempts},
    }


def _redact_cmdline(argv: list[str]) -> list[str]:
    """Command lines never carry keys (they come from the environment), but be safe anyway."""
    out, hide = [], False
    for arg in argv:
        out.append("***" if hide else arg)
        hide = arg in ("--api-key",)
    return out


def config_fingerprint(manifest: dict[str, Any]) -> str:
    subset = {k: manifest.get(k) for k in RESUME_KEYS}
    return hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()


def prepare_output(out: Path, manifest: dict[str, Any], force: bool) -> set[str]:
    """Item ids already answered in `out`; refuses a folder made by a different configuration."""
    samples = out / SAMPLES
    if force:
        for name in (SAMPLES, MANIFEST, SUMMARY_JSON, SUMMARY_MD):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if not samples.exists():
        return set()
    if (out / MANIFEST).exists():
        old = read_json(out / MANIFEST)
        if config_fingerprint(old) != config_fingerprint(manifest):
            changed = [k for k in RESUME_KEYS if old.get(k) != manifest.get(k)]
            raise RunError(f"{out} holds a run with a different configuration "
                           f"({', '.join(changed)} changed); use another --output, or --force "
                           "to start over")
    return {r["item_id"] for r in read_samples(samples) if not r.get("error")}


def latest_records(out: Path) -> list[dict[str, Any]]:
    """One record per item: the last one written (a retried error is superseded)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_samples(out / SAMPLES):
        previous = latest.get(record["item_id"])
        if previous is None or previous.get("error") or not record.get("error"):
            latest[record["item_id"]] = record
    return list(latest.values())


def finalize(out: Path) -> dict[str, Any]:
    """(Re)compute summary.json, summary.md and the report from samples.jsonl alone."""
    from .report import write_report

    out = Path(out)
    manifest = read_json(out / MANIFEST) if (out / MANIFEST).exists() else None
    seed = manifest["seed"] if manifest else 0
    records = latest_records(out)
    summary = summarize(records, seed=seed)
    write_json(out / SUMMARY_JSON, summary)
    write_text(out / SUMMARY_MD, summary_markdown(summary, manifest))
    write_report(out, summary=summary, records=records)
    return summary

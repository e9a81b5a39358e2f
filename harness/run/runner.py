"""Run an evaluation: stream items → render → adapter (with retries) → parse → score → records.

A bounded queue between one producer (reads rows, encodes each image once, renders every question
about it) and `concurrency` workers keeps memory flat whatever the dataset size. Every finished item
is written at once, so a re-run of the same command resumes where the last one stopped.
"""
from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from harness import __version__, config
from harness.adapters import (
    Adapter,
    AdapterError,
    ChatRequest,
    GenerationParams,
    create_adapter,
    split_spec,
)
from harness.adapters.answer_modes import (
    DEFAULT_TOP_LOGPROBS,
    OPENAI_MAX_TOP_LOGPROBS,
    unsupported,
)
from harness.adapters.presets import capabilities
from harness.adapters.redact import redact_argv
from harness.adapters.reply import MAX_RESPONSE_BYTES
from harness.data import options_order
from harness.data.images import MAX_SIDE, ImageError, encode_image
from harness.data.items import Example, Item, iter_examples
from harness.data.selection import SelectionError, check_selection
from harness.data.sources import (
    COUNT_COLUMNS,
    DatasetLoadError,
    DatasetSource,
    check_hub_reachable,
    iter_rows,
    resolve_source,
)
from harness.prompts import Template, TemplateError, load_template, render
from harness.report.finalize import finalize
from harness.report.results import (
    MANIFEST,
    RESUME_KEYS,
    SAMPLES,
    SUMMARY_JSON,
    SUMMARY_MD,
    SampleWriter,
    answered_ids,
    config_fingerprint,
    latest_records,
    read_json,
    resume_view,
    write_json,
)
from harness.report.run_report import import_plotting_soon
from harness.report.schema import ErrorInfo, SampleRecord, SamplesError, Summary
from harness.report.thumbnails import THUMBNAILS, ThumbnailRecorder
from harness.report.view import LiveView
from harness.run.cache import CachedAdapter, ResponseCache
from harness.run.concurrency import AdaptiveConcurrency, ConcurrencyController
from harness.run.feed import Batch, Encoded, encoded_batches
from harness.run.fewshot import (
    ExamplePool,
    ExamplePoolError,
    build_pool,
    pool_source,
    shared_encodings,
)
from harness.run.fewshot import describe as describe_pool
from harness.run.lock import FolderLocked, folder_lock
from harness.run.pacing import (
    Budget,
    BudgetExceeded,
    JudgeAllowance,
    PacedAdapter,
    RateLimiter,
)
from harness.run.records import answered
from harness.run.retry import RetryPolicy
from harness.score.judge import Judge, build_judge
from harness.score.parsing import parse_answer
from harness.score.pricing import PricingError, find_price, load_table
from harness.score.usage import judge_usage, usage_summary
from harness.servers.vllm_server import ManagedServer, ServerStartError, managed_vllm

ABORT_AFTER_SAME_FAILURES = 8
RUN_LOG = "run.log"
# Which run a log line belongs to, so that runs sharing one event loop (a study's cells on
# different servers) each write only their own run.log.
_CURRENT_RUN: contextvars.ContextVar[object | None] = contextvars.ContextVar("ubench_run",
                                                                             default=None)
PARSE_IN_THREAD_CHARS = 100_000  # longer answers are parsed off the event loop

log = logging.getLogger("ubench")


class RunError(Exception):
    """A run that cannot start or must stop; the message says what to do."""

    exit_code = 1


class InputError(RunError):
    """A usage or input error found before anything was sent (exit 2)."""

    exit_code = 2


class RunAborted(RunError):
    """The run stopped early (a rejected key, nothing listening, every request failing alike);
    what was answered is saved and summarised. Exit 3 if nothing was answered, else 1."""

    answered = False

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        """1 when some items were answered before the run stopped, 3 when none were."""
        return 1 if self.answered else 3


class UnsupportedAnswerMode(InputError):
    """The model or provider lacks what --answer-mode needs (refused before any request)."""


@dataclass
class RunConfig:
    """Everything that decides a run, from the CLI or a study; the manifest records it."""
    model: str
    output: Path
    dataset: str = "sample"
    revision: str | None = None
    prompt: str = "official"
    base_url: str | list[str] | None = None  # several: replicas of one model
    api_key_env: str | None = None
    datasets: list[str] | None = None
    question_types: list[str] | None = None
    limit: int | None = None
    include_excluded: bool = False
    shard: tuple[int, int] | None = None  # (K, N): this machine's slice of the images
    concurrency: int = config.CONCURRENCY
    adaptive_concurrency: bool = False  # `concurrency` is then the ceiling
    temperature: float = 0.0
    max_tokens: int = config.MAX_TOKENS
    top_p: float | None = None
    seed: int = 0
    timeout: float = config.TIMEOUT_S
    max_attempts: int = config.MAX_ATTEMPTS
    max_response_bytes: int = MAX_RESPONSE_BYTES
    image_format: str = "auto"
    max_pixels: int | None = None
    max_image_side: int | None = MAX_SIDE
    image_detail: str | None = None
    shuffle_options: int | None = None
    circular: bool = False
    force: bool = False
    use_cache: bool = True
    cache_path: Path | None = None
    progress: bool = True
    judge: str | None = None  # a model spec, asked only about responses the parser left invalid
    judge_base_url: str | None = None
    batch_size: int = 8  # transformers/ only
    serve: bool = False  # start a vLLM server for a vllm/ model (harness.servers.vllm_server)
    vllm_args: str = ""
    vllm_python: str | None = None
    serve_timeout: float = 900.0
    price_file: Path | None = None  # replaces the shipped harness/data/pricing.yaml
    batch: bool = False  # send through the Batch API (harness.run.batch)
    batch_poll_s: float = 30.0
    batch_max_requests: int = 50_000
    reasoning_effort: str | None = None
    extra_body: dict[str, Any] | None = None  # merged into every request body, verbatim
    api_version: str | None = None  # azure/ only
    max_rpm: float | None = None  # pacing and budget (harness.run.pacing)
    max_tpm: float | None = None
    max_cost: float | None = None
    batch_online_fallback: bool = False  # what the batches could not answer, asked online
    export_batch: bool = False  # with batch: only write the request files (harness.run.offline_batch)
    answer_mode: str = "free"  # free | choice | logprobs (harness.adapters.answer_modes)
    top_logprobs: int | None = None  # logprobs mode; default 20 (OpenAI's maximum)
    command_line: list[str] = field(default_factory=lambda: list(sys.argv))

    @property
    def params(self) -> GenerationParams:
        """The sampling settings sent with every request of this run."""
        top_logprobs = (self.top_logprobs or DEFAULT_TOP_LOGPROBS) \
            if self.answer_mode == "logprobs" else None
        return GenerationParams(self.temperature, self.max_tokens, self.top_p, self.seed,
                                self.answer_mode, top_logprobs)


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
    pool: ExamplePool | None = None  # few-shot templates: their examples


def run(config: RunConfig) -> Summary | None:
    """Run (or resume) an evaluation into `config.output`; returns the summary (None with
    `export_batch`: nothing is answered yet)."""
    return _run_sync(config, [(config.prompt, Path(config.output))])[0]


def run_prompts(config: RunConfig, prompts: list[str]) -> dict[str, Summary | None]:
    """A prompt study: every template on the same items, into `config.output/<template name>/`.

    One pipeline serves all variants, so each image is read and encoded once for all of them.
    Returns the summaries by template name.
    """
    try:
        names = [load_template(p).name for p in prompts]
    except TemplateError as exc:
        raise InputError(str(exc)) from exc
    if len(set(names)) != len(names):
        raise InputError(f"--prompt names the same template twice ({', '.join(names)})")
    outs = [Path(config.output) / name for name in names]
    return dict(zip(names, _run_sync(config, list(zip(prompts, outs)))))


def _run_sync(config: RunConfig, specs: list[tuple[str, Path]]) -> list[Summary | None]:
    check_capabilities(config)
    folders = dict.fromkeys([Path(config.output), *(out for _, out in specs)])
    try:
        with ExitStack() as locks:
            for folder in folders:  # one run per folder, held until its report is written
                if folder.exists() and not folder.is_dir():
                    raise InputError(f"--output {folder}: is a file, not a folder")
                locks.enter_context(folder_lock(folder))
            with managed_server(config) as server:
                return asyncio.run(run_pipeline(config, specs, server))
    except FolderLocked as exc:
        raise InputError(str(exc)) from None
    except ServerStartError as exc:
        raise RunError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"\nInterrupted. Everything finished so far is saved in {config.output}; "
              "run the same command again to resume.", file=sys.stderr)
        raise


def check_capabilities(config: RunConfig) -> None:
    """Refuse, before any server starts or request goes out, what the model's provider cannot do
    (harness.adapters.presets capabilities): an answer mode it cannot answer in, --batch without
    a Batch API."""
    try:
        provider, model = split_spec(config.model)
    except ValueError as exc:  # an unknown provider or an empty model name: usage, exit 2
        raise InputError(str(exc)) from None
    if config.batch and not config.export_batch and not capabilities(provider).batch_api:
        hint = (" (for vLLM's offline runner: --export-batch, then `ubench import-batch`)"
                if provider == "vllm" else "")
        raise InputError(f"--batch: {provider}/ has no Batch API that --batch can use (OpenAI's "
                         f"Files and Batches endpoints); run it without --batch{hint}")
    urls: Sequence[str | None] = ([config.base_url] if isinstance(config.base_url, str)
                                  else config.base_url or [None])
    for url in urls:
        if missing := unsupported(provider, model, url, config.answer_mode):
            raise UnsupportedAnswerMode(f"--answer-mode {config.answer_mode}: {config.model} "
                                        f"lacks {missing}")
    if config.top_logprobs is not None and config.answer_mode != "logprobs":
        raise UnsupportedAnswerMode("--top-logprobs needs --answer-mode logprobs")
    if provider not in ("vllm", "transformers") and \
            (config.top_logprobs or 0) > OPENAI_MAX_TOP_LOGPROBS:
        raise UnsupportedAnswerMode(f"--top-logprobs {config.top_logprobs}: the OpenAI API "
                                    f"returns at most {OPENAI_MAX_TOP_LOGPROBS}")
    if config.answer_mode != "free" and (config.batch or config.export_batch):
        raise UnsupportedAnswerMode(f"--answer-mode {config.answer_mode}: batch runs read "
                                    "free-text answers only; run it online")


def check_dataset(source: DatasetSource, config: RunConfig) -> None:
    """What a run (and its dry run) checks of the dataset before anything is written: the Hub
    reachable within seconds, the --datasets / --question-types names known (exit 2)."""
    try:
        if source.kind == "hub":
            check_hub_reachable()
        check_selection(source, config.datasets, config.question_types)
    except (SelectionError, DatasetLoadError) as exc:
        raise InputError(str(exc)) from None


@contextmanager
def managed_server(config: RunConfig) -> Iterator[ManagedServer | None]:
    """With --serve, a vLLM server for the model that lives as long as the run (or the study's
    cells of that model); else nothing."""
    if not config.serve:
        yield None
        return
    provider, model = split_spec(config.model)
    if provider != "vllm":
        raise InputError(f"--serve starts a vLLM server: use it with --model vllm/MODEL, "
                       f"not {config.model!r}")
    if config.base_url:
        raise InputError("--serve starts its own server on a free port: leave out --base-url")
    with managed_vllm(model, log_dir=Path(config.output), python=config.vllm_python,
                      extra_args=config.vllm_args, startup_timeout=config.serve_timeout) as server:
        yield server


async def run_pipeline(config: RunConfig, specs: list[tuple[str, Path]],
                       server: ManagedServer | None = None) -> list[Summary | None]:
    """Run (or resume) every (template, output folder) of `specs` in one pipeline on the running
    event loop, each image read and encoded once for all; `server` is the managed vLLM server, if
    any. Returns the summaries in `specs` order. Several may share one event loop (a study's cells
    on different servers): each writes only its own run.log."""
    _CURRENT_RUN.set(object())
    try:
        source = resolve_source(config.dataset, config.revision)
    except DatasetLoadError as exc:
        raise InputError(str(exc)) from None
    try:
        templates = [load_template(prompt) for prompt, _ in specs]
    except TemplateError as exc:
        raise InputError(str(exc)) from exc
    try:
        adapter = create_adapter(config.model,
                                 base_url=server.base_url if server else config.base_url,
                                 api_key_env=config.api_key_env, seed=config.seed,
                                 timeout=config.timeout, concurrency=config.concurrency,
                                 image_detail=config.image_detail, batch_size=config.batch_size,
                                 reasoning_effort=config.reasoning_effort,
                                 extra_body=config.extra_body, api_version=config.api_version,
                                 max_response_bytes=config.max_response_bytes,
                                 sends=not config.export_batch)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    batch_adapter = adapter
    if config.batch and (len(specs) != 1 or not hasattr(adapter, "files_client")):
        raise InputError("--batch sends one template's requests to one server: one --prompt, at "
                         "most one --base-url")
    if config.batch and not config.export_batch and config.max_cost is not None:
        raise InputError("--max-cost limits online requests; a batch is priced before it is sent: "
                         "check it with --dry-run (cost_usd_batch), then run --batch without it")
    # before any manifest is written: a failed start leaves nothing behind
    await asyncio.to_thread(check_dataset, source, config)
    if config.adaptive_concurrency:
        adapter = AdaptiveConcurrency(adapter, ConcurrencyController(config.concurrency))
    outs = [out for _, out in specs]
    judge = _make_judge(config)
    adapter, allowance = _paced(config, adapter, judge, outs)
    pools = await asyncio.to_thread(_example_pools, templates, source, config)
    done = []
    fresh = [out for out in outs if not (out / MANIFEST).exists() or config.force]
    for template, out, pool in zip(templates, outs, pools):
        manifest = build_manifest(config, source.describe(), template, adapter, server)
        manifest["judge"] = judge.describe() if judge else None
        manifest["judge_pricing"] = _price(config, config.judge) if judge else None
        if pool is not None:
            manifest["examples"] = describe_pool(pool)
        done.append(prepare_output(out, manifest, config.force))
        write_json(out / MANIFEST, manifest)
    handlers = [_log_to(out / RUN_LOG) for out in outs]
    cache = _open_cache(config) if config.use_cache else None
    # A managed server's port changes every run; what it serves (its version and args) does not.
    adapter = _cached(adapter, cache, {"server": server.describe()} if server else None)
    if judge:
        judge.adapter = _cached(judge.adapter, cache)
    progress = Progress(skipped=sum(map(len, done)))
    log.info("run: model %s, templates %s, %d items already done", config.model,
             ", ".join(t.name for t in templates), progress.skipped)
    thumbs = ThumbnailRecorder(outs, counted=source.kind != "hub")
    import_plotting_soon()
    total = asyncio.to_thread(count_requests, source, config, len(templates), thumbs)
    aborted = None
    views: list[LiveView] = []
    try:
        with ExitStack() as stack:
            variants = [Variant(t, stack.enter_context(SampleWriter(out / SAMPLES)), d, pool)
                        for t, out, d, pool in zip(templates, outs, done, pools)]
            views.extend(LiveView(v.writer) for v in variants)  # for the end of the run
            stack.callback(thumbs.close)
            if config.batch:  # the count first: it settles the thumbnails before any is made
                try:
                    await total
                except Exception:  # counting is a nicety (as online); the run reports load errors
                    pass
                await _batch(config, _examples(source, config), variants, batch_adapter, thumbs)
            if config.batch and config.batch_online_fallback and not config.export_batch:
                for variant in variants:  # what the batches could not answer, asked online
                    variant.done = answered_ids(variant.writer.path)
                await _pipeline(config, _examples(source, config), variants, adapter, progress,
                                asyncio.sleep(0), judge, thumbs, allowance)
            elif not config.batch:
                await _pipeline(config, _examples(source, config), variants, adapter, progress,
                                total, judge, thumbs, allowance)
    except RunAborted as exc:
        aborted = exc
        log.error("%s", exc)
    except asyncio.CancelledError:
        log.warning("interrupted after %d items; re-run the same command to resume",
                    progress.done)
        _close(views)
        raise
    except BaseException:
        _close(views)
        _forget_failed_start(fresh)
        raise
    finally:
        await adapter.aclose()
        if judge:
            await judge.aclose()
        if cache is not None:
            cache.close()
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
    if config.export_batch:
        _close(views)
        return [None for _ in outs]  # nothing answered yet: no summary
    gc.freeze()  # the end of the run makes many objects: its collections need not walk the run's
    try:
        summaries: list[Summary | None] = [finalize(out, view.view())
                                           for out, view in zip(outs, views)]
    finally:
        gc.unfreeze()
        _close(views)
    if aborted is not None:
        aborted.answered = any(s and s["n_scored"] for s in summaries)
        raise aborted
    return summaries


def _close(views: list[LiveView]) -> None:
    for view in views:
        view.close()


def _forget_failed_start(fresh: list[Path]) -> None:
    """A run that failed before writing any record leaves no manifest, so that the corrected
    command is not refused as "a different configuration"."""
    for out in fresh:
        samples = out / SAMPLES
        if not samples.exists() or samples.stat().st_size == 0:
            (out / MANIFEST).unlink(missing_ok=True)
            samples.unlink(missing_ok=True)


def _open_cache(config: RunConfig) -> ResponseCache | None:
    """The response cache; one that cannot even be created is skipped, with one warning."""
    import sqlite3

    from harness.run.cache import warn

    try:
        return ResponseCache(config.cache_path)
    except (OSError, sqlite3.Error) as exc:
        warn(f"the response cache cannot be opened ({exc}); running without it")
        return None


def _example_pools(templates: list[Template], source,
                   config: RunConfig) -> list[ExamplePool | None]:
    """Each few-shot template's bank of examples (read and encoded once, before any request)."""
    try:
        return [build_pool(t, pool_source(t, source), datasets=config.datasets,
                           include_excluded=config.include_excluded,
                           encode=lambda example: _encode(example, config))
                if t.examples else None for t in templates]
    except ExamplePoolError as exc:
        raise InputError(str(exc)) from None


def _examples(source, config: RunConfig, columns: list[str] | None = None):
    """The selected items, with the option-order transform the run asked for."""
    examples = iter_examples(iter_rows(source, columns), datasets=config.datasets,
                             question_types=config.question_types, limit=config.limit,
                             include_excluded=config.include_excluded, shard=config.shard)
    return options_order.transform(examples, shuffle_seed=config.shuffle_options,
                                   circular=config.circular)


def count_requests(source, config: RunConfig, n_variants: int,
                   thumbs: ThumbnailRecorder | None = None) -> int | None:
    """How many requests the run holds, reading no images (for the progress bar's ETA and a
    study's --dry-run); the records per image settle which images get a thumbnail.

    Streaming the Hub twice would cost as much as the run's reading; there only --limit is known.
    """
    if source.kind == "hub":
        return None if config.limit is None or config.circular else config.limit * n_variants
    counts: dict[str, int] = {}
    for e in _examples(source, config, COUNT_COLUMNS):
        counts[e.image_id] = counts.get(e.image_id, 0) + len(e.items)
    if thumbs is not None:
        thumbs.settle(counts)
    return n_variants * sum(counts.values())


def _log_to(path: Path) -> logging.Handler:
    """What the run logs goes to run.log in each output folder (never request payloads)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    owner = _CURRENT_RUN.get()
    handler.addFilter(lambda record: _CURRENT_RUN.get() is owner)
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return handler


def _cached(adapter: Adapter, cache: ResponseCache | None,
            endpoint: dict[str, Any] | None = None) -> Adapter:
    """Wrap `adapter` in the response cache; `endpoint` replaces its base URL in the key."""
    identity = adapter.cache_identity()
    if cache is None or identity is None:
        return adapter
    if endpoint is not None:
        identity = {**identity, "base_url": endpoint}
    return CachedAdapter(adapter, cache, identity)


def _paced(config: RunConfig, adapter: Adapter, judge: Judge | None,
           outs: list[Path]) -> tuple[Adapter, JudgeAllowance | None]:
    """--max-rpm, --max-tpm and --max-cost around the adapter (cache hits pass them by), and the
    judge's allowance from the same --max-cost, at its own price (the judge is not rate-limited:
    it has its own server and limits)."""
    if not (config.max_rpm or config.max_tpm or config.max_cost is not None):
        return adapter, None
    try:
        table = load_table(config.price_file)
    except PricingError as exc:
        raise InputError(f"--price-file: {exc}") from None
    price = find_price(config.model, table)
    judge_spec = config.judge if judge else None
    judge_price = find_price(judge_spec, table) if judge_spec else None
    budget = None
    if config.max_cost is not None:
        for spec, found in ((config.model, price), (judge_spec, judge_price)):
            if spec and found is None:
                raise RunError(f"--max-cost: the price table has no price for {spec}; give one "
                               "with --price-file")
        spent = 0.0
        for out in outs:
            if (out / SAMPLES).exists():
                try:
                    records = latest_records(out)
                except SamplesError as exc:  # as the resume itself refuses it (exit 2)
                    raise InputError(str(exc)) from None
                spent += usage_summary(records, price)["cost_usd"] or 0.0
                judged = judge_usage([r.judge for r in records if r.judge], judge_price)
                spent += (judged["cost_usd"] or 0.0) if judged else 0.0
        budget = Budget(config.max_cost, spent)
    allowance = JudgeAllowance(budget, judge_price, split_spec(judge_spec)[1]) \
        if budget and judge_spec and judge_price else None
    limiter = RateLimiter(config.max_rpm, config.max_tpm) \
        if config.max_rpm or config.max_tpm else None
    return PacedAdapter(adapter, limiter=limiter, budget=budget, price=price,
                        image_rule=price.image_rule if price else None,
                        image_detail=adapter.describe().get("image_detail"),
                        model=split_spec(config.model)[1]), allowance


def _make_judge(config: RunConfig) -> Judge | None:
    if not config.judge:
        return None
    try:
        return build_judge(config.judge, base_url=config.judge_base_url, seed=config.seed,
                           timeout=config.timeout, concurrency=config.concurrency,
                           max_attempts=config.max_attempts)
    except ValueError as exc:
        raise InputError(f"--judge: {exc}") from exc


async def _pipeline(config: RunConfig, examples, variants: list[Variant], adapter: Adapter,
                    progress: Progress, total, judge: Judge | None = None,
                    thumbs: ThumbnailRecorder | None = None,
                    allowance: JudgeAllowance | None = None) -> None:
    from tqdm.auto import tqdm

    queue: asyncio.Queue = asyncio.Queue(maxsize=2 * config.concurrency)
    policy = RetryPolicy(max_attempts=config.max_attempts)
    bar = tqdm(desc="ubench", unit="item", disable=not config.progress, dynamic_ncols=True)
    abort: list[str] = []
    answering = asyncio.Event()  # set by the first record: the requests are under way

    async def set_total() -> None:
        try:  # the count reads the dataset beside the requests, not before the first of them
            await answering.wait()
        except asyncio.CancelledError:
            total.close()
            raise
        try:
            n = await total
        except Exception:  # counting is a nicety; the run itself reports load errors
            return
        if n is not None:
            bar.total = max(n - progress.skipped, bar.n)
            bar.refresh()

    def on_retry(item_id: str, exc: AdapterError) -> None:
        progress.retries += 1
        log.info("retrying %s after %s (%s)", item_id, exc.kind, exc.message)

    def emit(writer: SampleWriter, record: SampleRecord) -> None:
        writer.append(record)
        answering.set()
        progress.done += 1
        if record.error is not None:
            progress.errors += 1
        else:
            progress.correct += bool(record.correct)
        bar.update(1)

    def show_counters() -> None:
        scored = progress.done - progress.errors
        bar.set_postfix(acc=f"{progress.correct / scored:.3f}" if scored else "–",
                        retries=progress.retries, errors=progress.errors, refresh=False)

    async def produce() -> None:
        batches = _feed(config, examples, variants, thumbs)
        while not abort:
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                break
            for pending, image, image_error in batch:
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
            record, held = None, 0.0
            try:  # the judge's worst case is set aside first: an answer is never left unjudged
                held = allowance.hold(item.question, item.option_map) if allowance else 0.0
                record = await _evaluate(item, image, image_error, variant.template, adapter,
                                         config, policy, on_retry, variant.pool)
                if judge:
                    await judge.review(record, item.question)
            except BudgetExceeded as exc:  # stop cleanly: the requests in flight still land
                if not abort:
                    abort.append(str(exc))
                continue
            finally:
                if allowance:
                    allowance.settle(held, record.judge if record else None)
            emit(variant.writer, record)
            _watch_failures(record, progress, abort)

    async def every_second() -> None:
        while True:
            await asyncio.sleep(1.0)
            show_counters()  # here, not per item: formatting them cost more than the rest of emit
            for variant in variants:  # fsync off the event loop: it can stall for 100s of ms
                await asyncio.to_thread(variant.writer.sync)

    counter = asyncio.create_task(set_total())
    syncer = asyncio.create_task(every_second())
    producer = asyncio.create_task(produce())
    workers = [asyncio.create_task(work()) for _ in range(config.concurrency)]
    try:
        await asyncio.gather(producer, *workers)
    finally:
        for task in (counter, syncer, producer, *workers):
            task.cancel()
        show_counters()
        bar.close()
    if abort:
        raise RunAborted(abort[0])


def _feed(config: RunConfig, examples, variants: list[Variant],
          thumbs: ThumbnailRecorder | None) -> Iterator[Batch]:
    """The run's one way from examples to encoded work: each image encoded once for every
    variant's items still to do (a few-shot bank image is not encoded again), its thumbnail
    offered from the bytes in hand, in batches of about `concurrency` items (harness.run.feed).
    Online runs and batch runs both read their requests from it."""
    def todo(example: Example) -> list[tuple[Variant, Item]]:
        return [(v, i) for v in variants for i in example.items if i.item_id not in v.done]

    banked = shared_encodings([v.pool for v in variants])  # few-shot images already encoded

    def encode(example: Example) -> Encoded:
        encoded = banked.get(example.image_id) or _encode(example, config)
        if thumbs is not None:  # here, in the encode thread, from the bytes in hand
            thumbs.offer(example.image_id, len(example.items),
                         example.image_bytes if encoded[1] is None else None)
        return encoded

    return encoded_batches(examples, todo, encode, batch_items=config.concurrency)


async def _batch(config: RunConfig, examples, variants: list[Variant], adapter,
                 thumbs: ThumbnailRecorder) -> None:
    """--batch: every request of the run through the Batch API (harness.run.batch), its requests
    and thumbnails made by the same feed as an online run's."""
    from harness.run.batch import BatchError, BatchOptions, run_batches

    variant = variants[0]

    def requests():
        for batch in _feed(config, examples, variants, thumbs):
            for pending, image, image_error in batch:
                for _, item in pending:
                    yield prepare_request(item, image, image_error, variant.template, config,
                                          variant.pool)
        thumbs.sync()  # on disk before the requests count as prepared: a re-run makes none

    options = BatchOptions(poll_s=config.batch_poll_s, max_requests=config.batch_max_requests,
                           max_response_bytes=config.max_response_bytes,
                           progress=config.progress)
    try:
        files = await run_batches(variant.writer.path.parent, adapter.files_client(), options,
                                  requests(), adapter.request_body, variant.writer,
                                  adapter.redact, RetryPolicy(max_attempts=config.max_attempts),
                                  submit=not config.export_batch)
    except BatchError as exc:
        raise RunError(str(exc)) from None
    if config.export_batch:
        from harness.run.offline_batch import vllm_commands

        print("Request files written; run them with vLLM, then `ubench import-batch "
              f"{variant.writer.path.parent} RESULTS.jsonl…`:", *vllm_commands(files, adapter.model),
              sep="\n", file=sys.stderr)


def _encode(example: Example, config: RunConfig):
    """Encode the image once for all its questions; a bad image becomes an error per item."""
    if example.image_problem:
        return None, example.image_problem
    try:
        return encode_image(example.image_bytes, image_format=config.image_format,
                            max_pixels=config.max_pixels, max_side=config.max_image_side), None
    except ImageError as exc:
        return None, f"field 'image': {exc}"


def prepare_request(item: Item, image, image_error: str | None, template: Template,
                    config: RunConfig, pool: ExamplePool | None = None
                    ) -> tuple[SampleRecord, ChatRequest | None]:
    """The item's record without its answer, and the request to ask (None: bad input, and the
    record says why)."""
    record = base_record(item, template)
    if problem := item.problem or image_error:
        field = problem.split("'")[1] if "'" in problem else None
        return _bad_input(record, problem, field), None
    chosen, example_images = [], None
    if pool is not None:
        try:
            chosen = pool.choose(item, image.sha256)
        except ExamplePoolError as exc:
            return _bad_input(record, str(exc), "examples"), None
        record.examples = [e.item.item_id for e in chosen]
        example_images = pool.example_images(chosen)
    try:
        messages = render(template, item.question, item.option_map, [e.shot() for e in chosen])
    except (KeyError, ValueError, IndexError) as exc:
        return _bad_input(record, f"template {template.name!r} failed to render: {exc}",
                          "template"), None
    record.prompt = messages
    record.image = image.describe()
    return record, ChatRequest(item.item_id, messages, image.data_url, config.params,
                               item.letters, image.url_sha256, example_images,
                               (image.width, image.height))


def _bad_input(record: SampleRecord, problem: str, field: str | None) -> SampleRecord:
    """The record of an item that cannot be asked, logged as skipped."""
    record.error = ErrorInfo.bad_input(record.item_id, problem, field)
    log.warning("skipped %s", record.error.message)
    return record


async def _evaluate(item: Item, image, image_error: str | None, template: Template,
                    adapter: Adapter, config: RunConfig, policy: RetryPolicy,
                    on_retry, pool: ExamplePool | None = None) -> SampleRecord:
    record, request = prepare_request(item, image, image_error, template, config, pool)
    if request is None:
        return record
    try:
        response = await policy.call(lambda: adapter.complete(request),
                                     lambda exc: on_retry(item.item_id, exc))
    except AdapterError as exc:
        record.error = ErrorInfo.from_adapter(exc)
        log.warning("failed %s after %d attempt(s): %s", item.item_id, exc.attempts, exc.message)
        return record
    if len(response.text) > PARSE_IN_THREAD_CHARS:  # never stall the other requests
        extraction = await asyncio.to_thread(parse_answer, response.text, item.option_map)
        return answered(record, response, extraction, config.answer_mode)
    return answered(record, response, answer_mode=config.answer_mode)


def base_record(item: Item, template: Template) -> SampleRecord:
    """The fields of a samples.jsonl record that come from the item and the template alone."""
    return SampleRecord(
        item_id=item.item_id, image_id=item.image_id, dataset=item.dataset,
        question_type=item.question_type, options=item.option_map, template=template.name,
        template_sha256=template.sha256, gold=item.gold_letter,
        option_order=list(item.option_order) if item.option_order else None,
        rotation=item.rotation, data_warning=item.warning)


def _watch_failures(record: SampleRecord, progress: Progress, abort: list[str]) -> None:
    """Stop early when every request so far fails the same non-retryable way (wrong key, model)."""
    err = record.error
    if err is None:
        progress.successes += 1
        progress.same_failure = ("", 0)
        return
    if err.stopped_run:
        abort.append(f"stopping: {err.message}")
        return
    if err.type == "bad_input" or progress.successes:
        return
    key = f"{err.type}:{err.status}:{err.message}"
    same, count = progress.same_failure
    progress.same_failure = (key, count + 1 if key == same else 1)
    if progress.same_failure[1] >= ABORT_AFTER_SAME_FAILURES:
        abort.append(f"stopping: the first {progress.same_failure[1]} requests all failed with "
                     f"{err.message} (check the model name, base URL and API key)")


# ---------------------------------------------------------------------------------------------
# Manifest, resume, summary


def build_manifest(config: RunConfig, dataset: dict[str, str], template: Template,
                   adapter: Adapter, server: ManagedServer | None = None) -> dict[str, Any]:
    """manifest.json: what produced the run (model, server, template, data, selection, versions)."""
    selection: dict[str, Any] = {"datasets": config.datasets, "question_types": config.question_types,
                 "limit": config.limit, "include_excluded": config.include_excluded}
    if config.shard:
        selection["shard"] = "{}/{}".format(*config.shard)
    return {
        "harness_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command_line": redact_argv(config.command_line),  # keys: environment, never argv
        "model": adapter.describe(),
        "server": server.describe() if server else None,
        "template": template.describe(),
        "generation": config.params.as_dict(),
        "seed": config.seed,
        "dataset": dataset,
        "selection": selection,
        "image": {"format": config.image_format, "max_pixels": config.max_pixels,
                  "max_side": config.max_image_side},
        "options_order": {"shuffle_seed": config.shuffle_options, "circular": config.circular},
        "pricing": _price(config),
        "answer_mode": {"mode": config.answer_mode,
                        "top_logprobs": config.params.top_logprobs},
        "runtime": {"concurrency": config.concurrency, "timeout_s": config.timeout,
                    "max_attempts": config.max_attempts, "batch_size": config.batch_size,
                    "adaptive_concurrency": config.adaptive_concurrency, "batch": config.batch,
                    "max_rpm": config.max_rpm, "max_tpm": config.max_tpm,
                    "max_cost_usd": config.max_cost,
                    "max_response_bytes": config.max_response_bytes},
    }


def _price(config: RunConfig, spec: str | None = None) -> dict[str, Any] | None:
    """The prices of the model (or of `spec`, the judge) from the table in force, recorded so the
    summary never re-guesses them."""
    try:
        price = find_price(spec or config.model, load_table(config.price_file))
    except PricingError as exc:
        raise InputError(f"--price-file: {exc}") from None
    return price.describe() if price else None


def prepare_output(out: Path, manifest: dict[str, Any], force: bool) -> set[str]:
    """Item ids already answered in `out`; refuses a folder made by a different configuration."""
    samples = out / SAMPLES
    if force:
        for name in (SAMPLES, MANIFEST, SUMMARY_JSON, SUMMARY_MD, THUMBNAILS):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if not samples.exists():
        return set()
    if (out / MANIFEST).exists():
        old = read_json(out / MANIFEST)
        if config_fingerprint(old) != config_fingerprint(manifest):
            old_view, new_view = resume_view(old), resume_view(manifest)
            changed = [k for k in RESUME_KEYS if old_view[k] != new_view[k]]
            raise InputError(f"{out} holds a run with a different configuration "
                           f"({', '.join(changed)} changed); use another --output, or --force "
                           "to start over")
    try:
        return answered_ids(samples)
    except SamplesError as exc:
        raise InputError(str(exc)) from None

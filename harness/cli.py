"""The `ubench` command line."""
from __future__ import annotations

import atexit
import gc
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from harness import __version__, config
from harness.data.items import QUESTION_TYPES
from harness.data.sources import DatasetLoadError
from harness.run import exit_codes

# At exit the interpreter's last garbage collection walks every object still alive: 0.3-0.4 s
# after a 20,000-item run, of a process that is ending anyway. Frozen, they are skipped.
atexit.register(gc.freeze)


class Failure(click.ClickException):
    """One line on stderr and the exit status a script can trust (harness.run.exit_codes)."""

    def __init__(self, message: str, exit_code: int = exit_codes.SOME_ERRORS):
        super().__init__(message)
        # click declares exit_code a ClassVar (default 1) and reads it from the instance.
        self.exit_code = exit_code  # type: ignore[misc]


def _base_url(ctx, param, values: tuple[str, ...] | str | None):
    """An http(s) URL with a host, checked before anything is sent (as a study's base_url)."""
    from harness.run.checks import base_url_problem

    for value in (values,) if isinstance(values, str) else values or ():
        if problem := base_url_problem(value):
            raise click.BadParameter(problem)
    return values


def _top_p(ctx, param, value: float | None) -> float | None:
    """In (0, 1], as a study's generation/top_p."""
    from harness.run.checks import top_p_problem

    if value is not None and (problem := top_p_problem(value)):
        raise click.BadParameter(problem)
    return value


def _refuse_ignored(rules) -> None:
    """An option the rest of the command line makes meaningless is a usage error (exit 2), not
    silently dropped (harness.option_rules)."""
    from click.core import ParameterSource

    from harness.option_rules import ignored_option

    ctx = click.get_current_context()
    given = {name for name in ctx.params if ctx.get_parameter_source(name) in (
        ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    if message := ignored_option(rules, ctx.params, given):
        raise Failure(message, exit_codes.USAGE)


@contextmanager
def _locked(*folders: Path) -> Iterator[None]:
    """Hold the run folders' locks (harness.run.lock); a folder in use is a usage error."""
    from harness.run.lock import FolderLocked, folder_locks

    try:
        with folder_locks(folders):
            yield
    except FolderLocked as exc:
        raise Failure(str(exc), exit_codes.USAGE) from None
    except OSError as exc:
        raise Failure(_os_error(exc)) from None


def _os_error(exc: OSError) -> str:
    """`cannot write PATH: No space left on device`: the path and the reason, no traceback."""
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot write{where}: {exc.strerror or exc}"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ubench")
def main() -> None:
    """Evaluate chat vision-language models on uBench (μ-Bench), the microscopy benchmark."""


def _split_csv(values: tuple[str, ...]) -> list[str] | None:
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return items or None


def _json_object(text: str | None, flag: str) -> dict | None:
    import json

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=flag) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object ({...})", param_hint=flag)
    return value


def _shard(text: str | None) -> tuple[int, int] | None:
    from harness.data.items import parse_shard

    try:
        return parse_shard(text) if text else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from None


@main.command("run")
@click.option("--model", "-m", required=True,
              help="provider/model: openai/gpt-4o, vllm/Qwen/Qwen2-VL-7B-Instruct, "
                   "transformers/HF-ID-OR-FOLDER, or random.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Run folder (default results/<model>-<prompt>). Re-running resumes it.")
@click.option("--dataset", "-d", default="sample", show_default=True,
              help="'sample' (bundled, synthetic), 'hub' (jnirschl/uBench), or a local path.")
@click.option("--revision", default=None, help="Hub revision (default: the pinned one).")
@click.option("--prompt", "-p", "prompts", multiple=True, default=["official"], show_default=True,
              help="Built-in template name (see `ubench prompts`) or path to a .yaml file. "
                   "Repeat it for a prompt study: one run per template in OUTPUT/<template>/, "
                   "then OUTPUT/compare.md and compare.html.")
@click.option("--base-url", multiple=True, callback=_base_url,
              help="OpenAI-compatible server, e.g. http://host:8000/v1. Repeat for replicas of one "
                   "model: requests go to the least busy; a failing one is rested and retried.")
@click.option("--api-key-env", default=None,
              help="Environment variable holding the API key (default OPENAI_API_KEY / VLLM_API_KEY).")
@click.option("--datasets", "datasets_", multiple=True,
              help="Only these source datasets (comma list); unknown names are refused.")
@click.option("--question-types", multiple=True,
              help=f"Only these question types (comma list of {', '.join(QUESTION_TYPES)}).")
@click.option("--include-excluded", is_flag=True,
              help="Keep opencell and sirinukunwattana_et_al_2016 (left out by the paper).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N items.")
@click.option("--shard", default=None, metavar="K/N",
              help="Run only slice K of N (split by image); combine with `ubench merge`.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=config.CONCURRENCY,
              show_default=True,
              help="Requests in flight at once.")
@click.option("--adaptive-concurrency", is_flag=True,
              help="Grow while latency stays flat, back off on 429s and timeouts "
                   "(--concurrency is the ceiling).")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Sampling temperature (>= 0).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=config.MAX_TOKENS,
              show_default=True,
              help="Most tokens the model may generate per answer.")
@click.option("--top-p", type=float, default=None, callback=_top_p,
              help="Nucleus sampling, in (0, 1] (default: the server's).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the request, the random baseline and the bootstrap.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=config.TIMEOUT_S,
              show_default=True, help="Per-request timeout in seconds (> 0).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=config.MAX_ATTEMPTS,
              show_default=True,
              help="Attempts per request (429, 5xx, timeouts and bad replies are retried).")
@click.option("--max-response-bytes", type=click.IntRange(min=1024), default=8 * 1024 * 1024,
              show_default=True, help="A reply body larger than this is that item's error "
                                      "(read in chunks, cut at the limit).")
@click.option("--image-format", type=click.Choice(["auto", "png", "jpeg"]), default="auto",
              show_default=True, help="auto sends PNG/JPEG as stored, anything else as PNG.")
@click.option("--max-image-pixels", type=click.IntRange(min=1), default=None,
              help="Downscale larger images to this many pixels (default: never).")
@click.option("--max-image-side", type=click.IntRange(min=0), default=2048, show_default=True,
              help="Downscale images whose long side is larger (OpenAI's detail=high limit); "
                   "0 = never. Recorded in the manifest and on each resized record.")
@click.option("--image-detail", type=click.Choice(["high", "low", "auto"]), default=None,
              help="OpenAI image detail (default high for openai/, unset for vllm/).")
@click.option("--judge", default=None, metavar="MODEL",
              help="LLM judge (provider/model) asked only about responses the parser finds invalid.")
@click.option("--judge-base-url", default=None, callback=_base_url,
              help="OpenAI-compatible server of the judge.")
@click.option("--shuffle-options", type=int, default=None, metavar="SEED",
              help="Show each item's options in a random order, seeded by SEED and the item id.")
@click.option("--circular", is_flag=True,
              help="Ask every rotation of the options; an item is right only if all rotations are.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="transformers/ only: requests per generate call (left padded).")
@click.option("--serve", is_flag=True,
              help="Start a vLLM server for --model vllm/MODEL on a free loopback port for the "
                   "length of the run (log: OUTPUT/vllm-server.log).")
@click.option("--vllm-args", default="", metavar="ARGS",
              help="With --serve: extra vLLM server arguments, e.g. "
                   "\"--tensor-parallel-size 2 --max-model-len 8192\".")
@click.option("--vllm-python", default=None, metavar="PYTHON",
              help="With --serve: the Python of an environment that has vllm (default: this one).")
@click.option("--serve-timeout", type=click.FloatRange(min=0, min_open=True), default=900.0,
              show_default=True,
              help="With --serve: seconds to wait for the server to become healthy.")
@click.option("--batch", is_flag=True,
              help="Send the requests through the OpenAI Batch API (half price, results within "
                   "24 h); re-run the same command to pick up where it stopped.")
@click.option("--batch-poll", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="With --batch: seconds between status checks.")
@click.option("--batch-max-requests", type=click.IntRange(1, 50_000), default=50_000,
              show_default=True, help="With --batch: requests per batch file (the API's limit "
                                      "is 50,000, and 200 MB).")
@click.option("--batch-online-fallback", is_flag=True,
              help="With --batch: ask online what the batches could not answer (failed twice, "
                   "or never answered by an expired batch).")
@click.option("--reasoning-effort", type=click.Choice(["minimal", "low", "medium", "high"]),
              default=None, help="OpenAI reasoning models (o-series, GPT-5): reasoning_effort.")
@click.option("--extra-body", default=None, metavar="JSON",
              help="A JSON object merged verbatim into every request body (e.g. "
                   "'{\"chat_template_kwargs\": {\"enable_thinking\": false}}'); recorded in "
                   "the manifest.")
@click.option("--api-version", default=None,
              help="azure/ only: the Azure OpenAI api-version (default $OPENAI_API_VERSION, "
                   "else 2024-10-21).")
@click.option("--max-rpm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="At most this many requests per minute (token bucket; follows the server's "
                   "x-ratelimit-* headers).")
@click.option("--max-tpm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="At most this many tokens per minute (estimated before sending, as the "
                   "provider counts them: prompt plus max tokens).")
@click.option("--max-cost", type=click.FloatRange(min=0), default=None, metavar="USD",
              help="Stop before the run could spend more than this, the judge's requests included "
                   "(resumable; exit 1).")
@click.option("--export-batch", is_flag=True,
              help="Only write the run's batch request files (OUTPUT/batch/requests-*.jsonl) for "
                   "vLLM's offline run_batch; then `ubench import-batch`.")
@click.option("--dry-run", is_flag=True,
              help="Send nothing: print and write OUTPUT/estimate.json with the requests, tokens "
                   "and cost the run would take.")
@click.option("--price-file", type=click.Path(path_type=Path), default=None,
              help="Price table (YAML, the layout of harness/data/pricing.yaml) to use instead "
                   "of the shipped one.")
@click.option("--answer-mode", type=click.Choice(["free", "choice", "logprobs"]), default="free",
              show_default=True,
              help="free: parse the letter out of free text; choice: constrain the output to the "
                   "option letters; logprobs: read the model's probability over the letters "
                   "(calibration metrics in the summary).")
@click.option("--top-logprobs", type=click.IntRange(min=1), default=None,
              help="With --answer-mode logprobs: alternatives per token (default 20, OpenAI's "
                   "maximum; vLLM allows up to its --max-logprobs).")
@click.option("--force", is_flag=True, help="Start over in an output folder of another run.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def run_cmd(model, output, dataset, revision, prompts, base_url, api_key_env, datasets_,
            question_types, include_excluded, limit, shard, concurrency, adaptive_concurrency,
            temperature, max_tokens, top_p, seed, timeout, max_attempts, max_response_bytes,
            image_format, max_image_pixels, max_image_side, image_detail, judge, judge_base_url,
            shuffle_options, circular, batch_size, serve, vllm_args, vllm_python, serve_timeout,
            answer_mode, top_logprobs, force, no_cache, no_progress, **hosted) -> None:
    """Evaluate MODEL on uBench and write samples.jsonl, manifest.json, summaries and the report.

    Exit status: 0 every selected item has an answer; 1 the run ended but some items are errors
    (a re-run retries them), or its folder could not be written; 2 usage or input error, nothing
    sent; 3 no item could be answered.
    """
    from harness.option_rules import RUN_RULES

    _refuse_ignored(RUN_RULES)
    # hosted-API options (cost, batches, limits, provider parameters)
    dry_run, export_batch = hosted.pop("dry_run"), hosted.pop("export_batch")
    hosted["extra_body"] = _json_object(hosted["extra_body"], "--extra-body")
    hosted["batch"] = hosted["batch"] or export_batch
    hosted["batch_poll_s"] = hosted.pop("batch_poll")
    from harness.report.results import MANIFEST, read_json
    from harness.report.run_report import REPORT_HTML
    from harness.report.tables import summary_markdown
    from harness.run.runner import RunConfig, RunError, run, run_prompts

    if output is None:
        safe = model.replace("/", "_")
        name = Path(prompts[0]).stem if len(prompts) == 1 else "prompts"
        mode = "" if answer_mode == "free" else f"-{answer_mode}"
        output = Path("results") / f"{safe}-{name}{mode}"
    config = RunConfig(
        model=model, output=output, dataset=dataset, revision=revision, prompt=prompts[0],
        base_url=list(base_url) or None, api_key_env=api_key_env,
        datasets=_split_csv(datasets_), question_types=_split_csv(question_types), limit=limit,
        include_excluded=include_excluded, shard=_shard(shard), concurrency=concurrency,
        adaptive_concurrency=adaptive_concurrency, temperature=temperature,
        max_tokens=max_tokens, top_p=top_p, seed=seed, timeout=timeout,
        max_attempts=max_attempts, max_response_bytes=max_response_bytes,
        image_format=image_format, max_pixels=max_image_pixels,
        max_image_side=max_image_side or None,
        image_detail=image_detail, shuffle_options=shuffle_options, circular=circular,
        force=force, use_cache=not no_cache, progress=not no_progress, judge=judge,
        judge_base_url=judge_base_url, batch_size=batch_size, serve=serve, vllm_args=vllm_args,
        vllm_python=vllm_python, serve_timeout=serve_timeout, export_batch=export_batch,
        answer_mode=answer_mode, top_logprobs=top_logprobs, **hosted,
    )
    if dry_run:
        _dry_run(config, list(prompts))
        return
    try:
        if len(prompts) == 1:
            summary = run(config)
        else:
            summaries = run_prompts(config, list(prompts))
            folders = [output / name for name in summaries]
    except RunError as exc:
        raise Failure(str(exc), exc.exit_code) from None
    except (DatasetLoadError, ValueError) as exc:
        raise Failure(str(exc)) from None
    except OSError as exc:  # the output folder: read-only, full, or over a size limit
        raise Failure(_os_error(exc)) from None
    except KeyboardInterrupt:
        sys.exit(130)
    if export_batch:
        return
    if len(prompts) == 1:
        assert summary is not None  # None only for --export-batch, returned above
        click.echo(summary_markdown(summary, read_json(output / MANIFEST)))
        click.echo(f"Results written to {output}/ (open {output / REPORT_HTML})")
        sys.exit(exit_codes.for_summaries([summary]))
    from harness.report.compare import CompareError, compare, compare_markdown, write_comparison

    try:
        result = compare(folders, seed=seed)
    except CompareError as exc:
        raise click.ClickException(str(exc)) from None
    write_comparison(result, output)
    click.echo(compare_markdown(result))
    click.echo(f"Runs written to {', '.join(f'{f}/' for f in folders)}; comparison in "
               f"{output}/compare.md and compare.html")
    sys.exit(exit_codes.for_summaries(s for s in summaries.values() if s is not None))


def _dry_run(config, prompts: list[str]) -> None:
    from harness.data.sources import resolve_source
    from harness.prompts import TemplateError, load_template
    from harness.run.estimate import ESTIMATE_JSON, estimate, estimate_text
    from harness.run.runner import RunError, check_capabilities, check_dataset

    try:  # what a real run refuses before sending anything, a dry run refuses too (exit 2)
        check_capabilities(config)
        check_dataset(resolve_source(config.dataset, config.revision), config)
        outputs = [(prompts[0], config.output)] if len(prompts) == 1 else [
            (p, config.output / load_template(p).name) for p in prompts]
    except RunError as exc:
        raise Failure(str(exc), exc.exit_code) from None
    except (TemplateError, DatasetLoadError) as exc:
        raise Failure(str(exc), exit_codes.USAGE) from None
    try:
        result = estimate(config, outputs)
    except RunError as exc:  # e.g. a few-shot pool too small: refused as the run refuses it
        raise Failure(str(exc), exc.exit_code) from None
    except (TemplateError, DatasetLoadError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # the output folder cannot be written
        raise Failure(_os_error(exc)) from None
    click.echo(estimate_text(result))
    click.echo(f"Written to {config.output / ESTIMATE_JSON}")


@main.command("score")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def score_cmd(run_dir: Path) -> None:
    """Recompute the summaries and the report of RUN_DIR from samples.jsonl alone."""
    from harness.report.finalize import finalize
    from harness.report.results import MANIFEST, SAMPLES, read_json
    from harness.report.schema import SamplesError
    from harness.report.tables import summary_markdown

    if not (run_dir / SAMPLES).exists():
        raise Failure(f"{run_dir}: no {SAMPLES} to score", exit_codes.USAGE)
    with _locked(run_dir):
        try:
            summary = finalize(run_dir)  # a bad line is found before anything is written
        except SamplesError as exc:
            raise Failure(str(exc), exit_codes.USAGE) from None
        except OSError as exc:
            raise Failure(_os_error(exc)) from None
    manifest = read_json(run_dir / MANIFEST) if (run_dir / MANIFEST).exists() else None
    click.echo(summary_markdown(summary, manifest))


@main.command("import-batch")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("results", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_batch_cmd(run_dir: Path, results: tuple[Path, ...]) -> None:
    """Join batch results files (e.g. from vLLM's run_batch) into RUN_DIR by custom_id, then score."""
    from harness.report.finalize import finalize
    from harness.report.results import MANIFEST, read_json
    from harness.report.schema import SamplesError
    from harness.report.tables import summary_markdown
    from harness.run.batch import BatchError
    from harness.run.offline_batch import import_results

    with _locked(run_dir):
        try:
            counts = import_results(run_dir, list(results))
            summary = finalize(run_dir)
        except (BatchError, SamplesError) as exc:
            raise Failure(str(exc), exit_codes.USAGE) from None
    click.echo(summary_markdown(summary, read_json(run_dir / MANIFEST)))
    click.echo(f"Imported {counts['answered']} answers and {counts['failed']} failed lines into "
               f"{run_dir}/ ({counts['missing']} requests have no result yet)")


@main.group("cache")
def cache_group() -> None:
    """The response cache ($UBENCH_CACHE_DIR, else ~/.cache/ubench)."""


@cache_group.command("info")
def cache_info() -> None:
    """Where the cache is, how many responses it holds, and its size."""
    from harness.run.cache import ResponseCache

    info = ResponseCache().info()
    click.echo(f"{info['path']}: {info['entries']} responses, {info['bytes'] / 1e6:.1f} MB")


@cache_group.command("clear")
@click.confirmation_option(prompt="Delete every cached response?")
def cache_clear() -> None:
    """Delete every cached response."""
    from harness.run.cache import ResponseCache

    cache = ResponseCache()  # a corrupt file is moved aside (and said so), then this one cleared
    n = cache.clear()
    click.echo(f"deleted {n} cached responses")


@main.command("extract")
@click.option("--input", "-i", "source", required=True, type=click.Path(path_type=Path),
              help="JSON Lines with at least 'response' and 'options' per line.")
@click.option("--output", "-o", "target", required=True, type=click.Path(path_type=Path),
              help="JSON Lines: each input line plus 'extracted' and 'rule'.")
@click.option("--judge", default=None, metavar="MODEL",
              help="LLM judge (provider/model) asked only about responses the parser finds invalid.")
@click.option("--judge-base-url", default=None, callback=_base_url,
              help="OpenAI-compatible server of the judge.")
def extract_cmd(source: Path, target: Path, judge: str | None, judge_base_url: str | None) -> None:
    """Read the answer letter out of any tool's responses with ubench's parser.

    Each input line needs 'response' and 'options' ({"A": text, ...} or a list lettered A, B, ...);
    an optional 'gold' (a letter, or "none") adds 'correct', an optional 'question' is shown to
    the judge. Malformed lines get an 'error' in the output and the run goes on.
    """
    from harness.option_rules import EXTRACT_RULES
    from harness.report.schema import NewerSchemaError
    from harness.score.extract import ExtractError, extract_file, summary_text
    from harness.score.judge import build_judge

    _refuse_ignored(EXTRACT_RULES)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise Failure(f"--output {target} is the --input file; write to another file",
                      exit_codes.USAGE)
    try:
        judged = build_judge(judge, base_url=judge_base_url) if judge else None
    except ValueError as exc:
        raise click.ClickException(f"--judge: {exc}") from None
    try:
        stats = extract_file(source, target, judged)
    except ExtractError as exc:
        raise click.ClickException(str(exc)) from None
    except NewerSchemaError as exc:  # a samples.jsonl of a newer harness: nothing written
        raise Failure(str(exc), exit_codes.USAGE) from None
    click.echo(summary_text(stats, target))
@main.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-samples", type=click.IntRange(min=0), default=config.BROWSER_LIMIT,
              show_default=True,
              help="Samples embedded in the browser (0 = all); all are in samples.parquet.")
@click.option("--no-thumbnails", is_flag=True,
              help="Leave the image thumbnails out of report.html (a smaller page).")
def report_cmd(run_dir: Path, max_samples: int, no_thumbnails: bool) -> None:
    """Write report.html, summary.csv, samples.parquet and plots/ into RUN_DIR."""
    import time

    from harness.report.results import SAMPLES, SUMMARY_JSON
    from harness.report.run_report import write_report
    from harness.report.schema import SamplesError

    if not (run_dir / SAMPLES).exists():
        raise Failure(f"{run_dir}: no {SAMPLES} to report on", exit_codes.USAGE)
    start = time.perf_counter()
    with _locked(run_dir):
        if not (run_dir / SUMMARY_JSON).exists():
            raise Failure(f"{run_dir}: no {SUMMARY_JSON}; run `ubench score {run_dir}`",
                          exit_codes.USAGE)
        try:
            path = write_report(run_dir, max_samples=max_samples,
                                with_thumbnails=not no_thumbnails)
        except SamplesError as exc:
            raise Failure(str(exc), exit_codes.USAGE) from None
        except OSError as exc:
            raise Failure(_os_error(exc)) from None
    click.echo(f"Report written to {path} ({time.perf_counter() - start:.1f} s)")


@main.command("compare")
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for compare.md/.html/.json (default: the runs' common parent).")
@click.option("--scorer", type=click.Choice(["robust", "official"]), default="robust",
              show_default=True, help="Compare under ubench's parser or the paper's scorer.")
@click.option("--allow-mixed", is_flag=True, help="Compare runs on different dataset revisions.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the bootstrap.")
def compare_cmd(run_dirs: tuple[Path, ...], output: Path | None, scorer: str, allow_mixed: bool,
                seed: int) -> None:
    """Compare runs on the items they share; the first RUN_DIR is the reference."""
    import os

    from harness.report.compare import CompareError, compare, compare_markdown, write_comparison
    from harness.report.schema import NewerSchemaError

    try:
        result = compare(list(run_dirs), scorer=scorer, allow_mixed=allow_mixed, seed=seed)
    except CompareError as exc:
        raise click.ClickException(str(exc)) from None
    except NewerSchemaError as exc:
        raise Failure(str(exc), exit_codes.USAGE) from None
    output = output or Path(os.path.commonpath([p.resolve() for p in run_dirs]))
    paths = write_comparison(result, output)
    click.echo(compare_markdown(result))
    click.echo(f"Written to {', '.join(str(p) for p in paths)}")


@main.command("merge")
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path),
              help="New run folder for the merged results.")
def merge_cmd(run_dirs: tuple[Path, ...], output: Path) -> None:
    """Combine the run folders of `--shard K/N` runs (all N of them) into one run folder."""
    from harness.report.merge import MergeError, merge_runs
    from harness.report.results import MANIFEST, read_json
    from harness.report.tables import summary_markdown

    if output.exists() and not output.is_dir():
        raise Failure(f"--output {output}: is a file, not a folder", exit_codes.USAGE)
    with _locked(*run_dirs, output):
        try:
            summary = merge_runs(list(run_dirs), output)
        except (MergeError, ValueError) as exc:
            raise Failure(str(exc), exit_codes.USAGE) from None
        except OSError as exc:
            raise Failure(_os_error(exc)) from None
    click.echo(summary_markdown(summary, read_json(output / MANIFEST)))
    click.echo(f"Merged {len(run_dirs)} shards into {output}/")


@main.command("study")
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Study folder (default: the file's `output`, else results/<name>).")
@click.option("--dry-run", is_flag=True, help="List the cells and their request counts; send nothing.")
@click.option("--force", is_flag=True, help="Start every cell over.")
def study_cmd(study_file: Path, output: Path | None, dry_run: bool, force: bool) -> None:
    """Run a prompt study (models × templates × answer modes × option orders × seeds) from a
    YAML file: each cell a run folder, then study.md/.html/.json and a heatmap.

    Exit status, as for `ubench run`, over all the cells: 0 every item has an answer; 1 some
    items are errors (a re-run retries them); 2 usage or input error (the study file); 3 no item
    could be answered.
    """
    from harness.report.compare import CompareError
    from harness.report.markdown import md_table
    from harness.report.schema import SamplesError
    from harness.report.study import STUDY_HTML, STUDY_MD, write_study
    from harness.run.runner import RunError
    from harness.run.study import cells, run_study
    from harness.run.study_file import StudyFileError, load_study

    try:
        study = load_study(study_file)
        output = output or Path(study.spec.get("output") or Path("results") / study.name)
        if dry_run:
            rows = cells(study, output, force=force)
            for line in md_table(
                    ["model", "template", "answer mode", "option order", "seed", "server",
                     "requests", "done", "to send", "folder"],
                    ([r["model"], r["template"], r["answer_mode"], r["option_order"], r["seed"],
                      r["server"], "?" if r["requests"] is None else r["requests"], r["done"],
                      "?" if r["requests"] is None else r["requests"] - r["done"], r["folder"]]
                     for r in rows)):
                click.echo(line)
            known = [r["requests"] - r["done"] for r in rows if r["requests"] is not None]
            click.echo(f"{len(rows)} cells; {sum(known)} requests to send.")
            return
        done = run_study(study, output, force=force, echo=click.echo)
        result = write_study(study.name, done, study.metric, output, spec=study.spec,
                             seed=study.seeds[0])
    except RunError as exc:
        raise Failure(str(exc), exc.exit_code) from None
    except (StudyFileError, SamplesError) as exc:
        raise Failure(str(exc), exit_codes.USAGE) from None
    except (DatasetLoadError, CompareError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise Failure(_os_error(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"Interrupted; every finished answer is saved under {output}; run the same "
                   "command again to resume.", err=True)
        sys.exit(130)
    click.echo((output / STUDY_MD).read_text(encoding="utf-8"))
    click.echo(f"Study written to {output}/ (open {output / STUDY_HTML})")
    sys.exit(exit_codes.for_summaries(result["leaderboard"]))  # each cell's n_errors, n_scored


@main.command("prompts")
def prompts_cmd() -> None:
    """List the built-in prompt templates."""
    from harness.prompts import builtin_names, load_template

    for name in builtin_names():
        t = load_template(name)
        click.echo(f"{t.name:<22} {t.sha256[:12]}  {t.description}")


if __name__ == "__main__":
    main()

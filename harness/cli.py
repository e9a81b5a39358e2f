"""The `ubench` command line."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .data import DatasetLoadError, QUESTION_TYPES


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ubench")
def main() -> None:
    """Evaluate chat vision-language models on uBench (μ-Bench), the microscopy benchmark."""


def _split_csv(values: tuple[str, ...]) -> list[str] | None:
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return items or None


@main.command("run")
@click.option("--model", "-m", required=True,
              help="provider/model: openai/gpt-4o, vllm/Qwen/Qwen2-VL-7B-Instruct, or random.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Run folder (default results/<model>-<prompt>). Re-running resumes it.")
@click.option("--dataset", "-d", default="sample", show_default=True,
              help="'sample' (bundled, synthetic), 'hub' (jnirschl/uBench), or a local path.")
@click.option("--revision", default=None, help="Hub revision (default: the pinned one).")
@click.option("--prompt", "-p", default="official", show_default=True,
              help="Built-in template name (see `ubench prompts`) or path to a .yaml file.")
@click.option("--base-url", default=None, help="OpenAI-compatible server, e.g. http://host:8000/v1.")
@click.option("--api-key-env", default=None,
              help="Environment variable holding the API key (default OPENAI_API_KEY / VLLM_API_KEY).")
@click.option("--datasets", "datasets_", multiple=True, help="Only these source datasets (comma list).")
@click.option("--question-types", multiple=True,
              help=f"Only these question types (comma list of {', '.join(QUESTION_TYPES)}).")
@click.option("--include-excluded", is_flag=True,
              help="Keep opencell and sirinukunwattana_et_al_2016 (left out by the paper).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N items.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--top-p", type=float, default=None)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the request, the random baseline and the bootstrap.")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Per-request timeout in seconds.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--image-format", type=click.Choice(["auto", "png", "jpeg"]), default="auto",
              show_default=True, help="auto sends PNG/JPEG as stored, anything else as PNG.")
@click.option("--max-image-pixels", type=click.IntRange(min=1), default=None,
              help="Downscale larger images to this many pixels (default: never).")
@click.option("--image-detail", type=click.Choice(["high", "low", "auto"]), default=None,
              help="OpenAI image detail (default high for openai/, unset for vllm/).")
@click.option("--judge", default=None, metavar="MODEL",
              help="LLM judge (provider/model) asked only about responses the parser finds invalid.")
@click.option("--judge-base-url", default=None, help="OpenAI-compatible server of the judge.")
@click.option("--force", is_flag=True, help="Start over in an output folder of another run.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def run_cmd(model, output, dataset, revision, prompt, base_url, api_key_env, datasets_,
            question_types, include_excluded, limit, concurrency, temperature, max_tokens, top_p,
            seed, timeout, max_attempts, image_format, max_image_pixels, image_detail, judge,
            judge_base_url, force, no_cache, no_progress) -> None:
    """Evaluate MODEL on uBench and write samples.jsonl, manifest.json and summaries."""
    from .runner import RunConfig, RunError, run
    from .tables import summary_markdown
    from .results import read_json, MANIFEST

    if output is None:
        safe = model.replace("/", "_")
        output = Path("results") / f"{safe}-{Path(prompt).stem}"
    config = RunConfig(
        model=model, output=output, dataset=dataset, revision=revision, prompt=prompt,
        base_url=base_url, api_key_env=api_key_env, datasets=_split_csv(datasets_),
        question_types=_split_csv(question_types), limit=limit,
        include_excluded=include_excluded, concurrency=concurrency, temperature=temperature,
        max_tokens=max_tokens, top_p=top_p, seed=seed, timeout=timeout,
        max_attempts=max_attempts, image_format=image_format, max_pixels=max_image_pixels,
        image_detail=image_detail, force=force, use_cache=not no_cache, progress=not no_progress,
        judge=judge, judge_base_url=judge_base_url,
    )
    try:
        summary = run(config)
    except (RunError, DatasetLoadError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        sys.exit(130)
    click.echo(summary_markdown(summary, read_json(output / MANIFEST)))
    click.echo(f"Results written to {output}/")


@main.command("score")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def score_cmd(run_dir: Path) -> None:
    """Recompute summary.json and summary.md of RUN_DIR from samples.jsonl alone."""
    from .results import MANIFEST, SAMPLES, read_json
    from .runner import finalize
    from .tables import summary_markdown

    if not (run_dir / SAMPLES).exists():
        raise click.ClickException(f"{run_dir}: no {SAMPLES} to score")
    summary = finalize(run_dir)
    manifest = read_json(run_dir / MANIFEST) if (run_dir / MANIFEST).exists() else None
    click.echo(summary_markdown(summary, manifest))


@main.group("cache")
def cache_group() -> None:
    """The response cache ($UBENCH_CACHE_DIR, else ~/.cache/ubench)."""


@cache_group.command("info")
def cache_info() -> None:
    """Where the cache is, how many responses it holds, and its size."""
    from .cache import ResponseCache

    info = ResponseCache().info()
    click.echo(f"{info['path']}: {info['entries']} responses, {info['bytes'] / 1e6:.1f} MB")


@cache_group.command("clear")
@click.confirmation_option(prompt="Delete every cached response?")
def cache_clear() -> None:
    """Delete every cached response."""
    from .cache import ResponseCache

    n = ResponseCache().clear()
    click.echo(f"deleted {n} cached responses")
@main.command("extract")
@click.option("--input", "-i", "source", required=True, type=click.Path(path_type=Path),
              help="JSON Lines with at least 'response' and 'options' per line.")
@click.option("--output", "-o", "target", required=True, type=click.Path(path_type=Path),
              help="JSON Lines: each input line plus 'extracted' and 'rule'.")
def extract_cmd(source: Path, target: Path) -> None:
    """Read the answer letter out of any tool's responses with ubench's parser.

    Each input line needs 'response' and 'options' ({"A": text, ...} or a list lettered A, B, ...);
    an optional 'gold' letter adds 'correct'. Malformed lines get an 'error' in the output and
    the run goes on.
    """
    from .extract import ExtractError, extract_file, summary_text

    try:
        stats = extract_file(source, target)
    except ExtractError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary_text(stats, target))


@main.command("prompts")
def prompts_cmd() -> None:
    """List the built-in prompt templates."""
    from prompts import builtin_names, load_template

    for name in builtin_names():
        t = load_template(name)
        click.echo(f"{t.name:<12} {t.sha256[:12]}  {t.description}")


if __name__ == "__main__":
    main()

"""Run a study: every cell of models × templates × answer modes × option orders × seeds.

A cell is one model, template, answer mode, option order and seed, and its folder is a normal run
folder: `<study>/runs/<model>/<condition>/<template>/`. The templates of one model and condition
run in one pipeline (each image read and encoded once for all of them), pipelines on the same
server one after another, pipelines on different servers at the same time on one event loop,
each with the model's own concurrency. Every cell resumes on its own, so re-running the study
sends only what is missing.
"""
from __future__ import annotations

import asyncio
import dataclasses
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import config
from harness.data.sources import resolve_source
from harness.prompts import load_template
from harness.report.results import SAMPLES, answered_ids
from harness.run.lock import FolderLocked, folder_locks
from harness.run.runner import (
    InputError,
    RunConfig,
    RunError,
    check_capabilities,
    count_requests,
    managed_server,
    run_pipeline,
)
from harness.run.study_file import ModelEntry, Study
from harness.servers.vllm_server import ServerStartError


@dataclass(frozen=True)
class Pipeline:
    """One model under one condition, with all the study's templates."""

    model: ModelEntry
    answer_mode: str
    option_order: str
    seed: int
    folder: Path

    @property
    def condition(self) -> str:
        """The condition's folder name (see `condition_name`)."""
        return condition_name(self.answer_mode, self.option_order, self.seed)


def condition_name(answer_mode: str, option_order: str, seed: int) -> str:
    """A run folder name for one condition (answer mode, option order, seed) that is safe on disk."""
    return f"{answer_mode}-{option_order.replace(':', '').replace('+', '-')}-seed{seed}"


def pipelines(study: Study, output: Path) -> list[Pipeline]:
    """One pipeline per model and condition of the study, each with its own run folder."""
    return [Pipeline(m, mode, order, seed,
                     output / "runs" / m.label / condition_name(mode, order, seed))
            for m in study.models for mode in study.answer_modes
            for order in study.option_orders for seed in study.seeds]


def template_names(study: Study) -> list[str]:
    """The study's template names, as the run folders and tables use them."""
    return [load_template(t).name for t in study.templates]


def run_config(study: Study, pipe: Pipeline, *, progress: bool = False) -> RunConfig:
    """The `ubench run` configuration of one pipeline."""
    spec, gen = study.spec, study.spec.get("generation", {})
    order = pipe.option_order
    shuffle = int(order.split(":")[1].split("+")[0]) if order.startswith("shuffle:") else None
    m = pipe.model
    return RunConfig(
        model=m.model, output=pipe.folder, dataset=spec.get("dataset", "sample"),
        revision=spec.get("revision"), prompt=study.templates[0], base_url=m.base_url,
        api_key_env=m.api_key_env, datasets=spec.get("datasets"),
        question_types=spec.get("question_types"), limit=spec.get("limit"),
        include_excluded=spec.get("include_excluded", False), concurrency=m.concurrency,
        temperature=gen.get("temperature", 0.0), max_tokens=gen.get("max_tokens", config.MAX_TOKENS),
        top_p=gen.get("top_p"), seed=pipe.seed, timeout=gen.get("timeout", config.TIMEOUT_S),
        max_attempts=gen.get("max_attempts", config.MAX_ATTEMPTS), shuffle_options=shuffle,
        circular=order.endswith("circular"), progress=progress, serve=m.serve,
        vllm_args=m.vllm_args, vllm_python=m.vllm_python, answer_mode=pipe.answer_mode,
        command_line=[*sys.argv, f"(study cell {pipe.model.label}/{pipe.condition})"])


def cells(study: Study, output: Path, *, force: bool = False,
          count_done: bool = True) -> list[dict[str, Any]]:
    """Every cell with its folder, its request count and (`count_done`, for --dry-run) how many
    items it has answered (none with `force`: a forced study starts every cell over); after a
    run the study's report counts them as it reads the cells."""
    names = template_names(study)
    rows = []
    for pipe in pipelines(study, output):
        config = run_config(study, pipe)
        total = count_requests(resolve_source(config.dataset, config.revision), config, 1)
        for name in names:
            folder = pipe.folder / name
            rows.append({"model": pipe.model.label, "spec": pipe.model.model, "template": name,
                         "answer_mode": pipe.answer_mode, "option_order": pipe.option_order,
                         "seed": pipe.seed, "server": pipe.model.server_key(),
                         "folder": str(folder), "requests": total,
                         **({"done": 0 if force else len(answered_ids(folder / SAMPLES))} if count_done
                            else {})})
    return rows


def run_study(study: Study, output: Path, *, force: bool = False,
              echo=print) -> list[dict[str, Any]]:
    """Run (or resume) every cell; returns the cells as `cells` lists them, without reading
    their samples (`harness.report.study` reads each once)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    by_server: dict[str, list[Pipeline]] = {}
    for pipe in pipelines(study, output):
        check_capabilities(run_config(study, pipe))  # as `ubench run` refuses it, before anything
        by_server.setdefault(pipe.model.server_key(), []).append(pipe)

    async def one_server(pipes: list[Pipeline], servers: dict[str, Any]) -> None:
        for pipe in pipes:
            config = dataclasses.replace(run_config(study, pipe), force=force)
            echo(f"cell {pipe.model.label} · {pipe.condition}: {', '.join(names)}")
            specs = [(t, pipe.folder / n) for t, n in zip(study.templates, names)]
            await run_pipeline(config, specs, servers.get(pipe.model.label))
            echo(f"done {pipe.model.label} · {pipe.condition}")

    async def everything(servers: dict[str, Any]) -> None:
        await asyncio.gather(*(one_server(p, servers) for p in by_server.values()))

    names = template_names(study)
    with ExitStack() as stack:  # managed vLLM servers (serve: true), one per model, for the study
        try:  # the study's folder and every cell, for the study's life (harness.run.lock)
            stack.enter_context(folder_locks([output, *(pipe.folder / name for pipes in
                                                        by_server.values() for pipe in pipes
                                                        for name in names)]))
        except FolderLocked as exc:
            raise InputError(str(exc)) from None
        servers = {}
        try:
            for pipes in by_server.values():
                if pipes[0].model.serve:
                    config = dataclasses.replace(run_config(study, pipes[0]),
                                                 output=pipes[0].folder.parent)
                    servers[pipes[0].model.label] = stack.enter_context(managed_server(config))
        except ServerStartError as exc:
            raise RunError(str(exc)) from None
        asyncio.run(everything(servers))
    return cells(study, output, count_done=False)

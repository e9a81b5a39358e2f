"""The study file: models × templates × answer modes × option orders × seeds, as YAML.

Validated by a JSON Schema; an error names the line of the offending value, so the file is read
with a YAML loader that keeps each node's position.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jsonschema
import yaml

from harness import config
from harness.adapters.answer_modes import ANSWER_MODES
from harness.option_rules import RUN_RULES, ignored_option
from harness.prompts import TemplateError, load_template
from harness.run.checks import base_url_problem, top_p_problem

OPTION_ORDER = re.compile(r"^(stored|circular|shuffle:-?\d+(\+circular)?)$")

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ubench study",
    "type": "object",
    "required": ["name", "models", "templates"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
        "description": {"type": "string"},
        "output": {"type": "string", "minLength": 1},
        "dataset": {"type": "string", "minLength": 1, "default": "sample"},
        "revision": {"type": ["string", "null"]},
        "datasets": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "question_types": {"type": "array", "minItems": 1, "items": {
            "enum": ["classification", "domain", "subdomain", "modality", "submodality",
                     "stain"]}},
        "limit": {"type": "integer", "minimum": 1},
        "include_excluded": {"type": "boolean"},
        "generation": {"type": "object", "additionalProperties": False, "properties": {
            "temperature": {"type": "number", "minimum": 0},
            "max_tokens": {"type": "integer", "minimum": 1},
            "top_p": {"type": ["number", "null"]},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "max_attempts": {"type": "integer", "minimum": 1}}},
        "models": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["model"], "additionalProperties": False,
            "properties": {
                "model": {"type": "string", "pattern": "^[^/]+(/.+)?$"},
                "label": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
                "base_url": {"oneOf": [{"type": "string", "minLength": 1},
                                       {"type": "array", "minItems": 1,
                                        "items": {"type": "string", "minLength": 1}}]},
                "api_key_env": {"type": "string"},
                "concurrency": {"type": "integer", "minimum": 1},
                "serve": {"type": "boolean"},
                "vllm_args": {"type": "string"},
                "vllm_python": {"type": "string"}}}},
        "templates": {"type": "array", "minItems": 1, "items": {"type": "string",
                                                                 "minLength": 1}},
        "answer_modes": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "option_orders": {"type": "array", "minItems": 1, "items": {
            "type": "string", "pattern": OPTION_ORDER.pattern}},
        "seeds": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
        "metric": {"type": "object", "additionalProperties": False, "properties": {
            "scorer": {"enum": ["robust", "official"]},
            "group": {"type": "string", "minLength": 1}}},
    },
}


class StudyFileError(ValueError):
    """The study file is unreadable or invalid; the message names the file and line."""


@dataclass(frozen=True)
class ModelEntry:
    """One model of a study file, with the server settings it is reached by."""
    model: str
    label: str
    base_url: list[str] | None
    api_key_env: str | None
    concurrency: int
    serve: bool
    vllm_args: str
    vllm_python: str | None

    def server_key(self) -> str:
        """Cells with the same key share a server and run one after another."""
        return f"serve:{self.label}" if self.serve else ",".join(self.base_url or [self.model])


@dataclass
class Study:
    """A checked study file: models × templates × conditions and how to rank them."""
    name: str
    path: Path
    spec: dict[str, Any]
    models: list[ModelEntry]
    templates: list[str]
    answer_modes: list[str]
    option_orders: list[str]
    seeds: list[int]
    metric: dict[str, str] = field(default_factory=lambda: {"scorer": "robust",
                                                            "group": "coarse"})


class _LineLoader(yaml.SafeLoader):
    """Keeps the node of every value, so that schema errors can name a line."""


def _compose(text: str, origin: str):
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StudyFileError(f"{origin}: not valid YAML: {exc}") from None
    return node, data


def _line_of(node, path: list[Any]) -> int:
    """1-based line of the value at `path` (keys and indices), or of its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


# A study's settings that are `ubench run` options, with where they are given in the file.
_MODEL_OPTIONS = ("base_url", "api_key_env", "vllm_args", "vllm_python")
_GENERATION_OPTIONS = ("temperature", "top_p", "timeout", "max_attempts")


def _refuse_ignored(data: dict[str, Any], model: dict[str, Any], at: list[Any],
                    fail: Callable[[list[Any], str], Exception]) -> None:
    """A setting the model's cells would ignore is refused as `ubench run` refuses the option
    (harness.option_rules): a base_url for `random`, a temperature for an o-series model."""
    values: dict[str, Any] = {"model": model["model"], "judge": None, "export_batch": False,
                              "batch": False, "batch_online_fallback": False,
                              "serve": model.get("serve", False),
                              "dataset": data.get("dataset", "sample")}
    given = [(name, at + [name]) for name in _MODEL_OPTIONS if name in model]
    given += [(name, ["generation", name]) for name in _GENERATION_OPTIONS
              if name in data.get("generation", {})]
    for name, field_path in given:
        if message := ignored_option(RUN_RULES, values, {name}):
            raise fail(field_path, f"{message} (as `ubench run` refuses it)")


def load_study(path: Path) -> Study:
    """Read and validate a study file; every error is one line naming the file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    node, data = _compose(text, str(path))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA)
                                             .iter_errors(data))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "(top level)"
        line = _line_of(node, list(error.absolute_path))
        raise StudyFileError(f"{path}:{line}: field {where}: {error.message}")

    def fail(field_path: list[Any], message: str) -> StudyFileError:
        return StudyFileError(f"{path}:{_line_of(node, field_path)}: field "
                              f"{'/'.join(map(str, field_path))}: {message}")

    top_p = data.get("generation", {}).get("top_p")
    if top_p is not None and (problem := top_p_problem(top_p)):  # as `ubench run --top-p`
        raise fail(["generation", "top_p"], problem)
    modes = data.get("answer_modes", ["free"])
    for i, mode in enumerate(modes):
        if mode not in ANSWER_MODES:
            raise fail(["answer_modes", i], f"answer mode {mode!r} is not available in this "
                       f"version (available: {', '.join(ANSWER_MODES)})")
    models = []
    for i, m in enumerate(data["models"]):
        urls = m.get("base_url")
        urls = [urls] if isinstance(urls, str) else urls
        if urls:
            urls = [os.path.expandvars(u) for u in urls]
            if any("$" in u for u in urls):
                raise fail(["models", i, "base_url"], f"{urls}: an environment variable in it "
                           "is not set")
            for j, url in enumerate(urls):  # as `ubench run --base-url` checks it
                if problem := base_url_problem(url):
                    at = ["models", i, "base_url"] + ([j] if isinstance(m["base_url"], list) else [])
                    raise fail(at, problem)
        if m.get("serve") and urls:
            raise fail(["models", i, "base_url"], "serve starts its own server: leave out "
                       "base_url")
        _refuse_ignored(data, m, ["models", i], fail)
        label = m.get("label") or m["model"].replace("/", "_")
        models.append(ModelEntry(m["model"], label, urls, m.get("api_key_env"),
                                 m.get("concurrency", config.CONCURRENCY), m.get("serve", False),
                                 m.get("vllm_args", ""), m.get("vllm_python")))
    templates, names = [], []  # names: the templates' own names, which name the cells' folders
    for i, name in enumerate(data["templates"]):
        if name.endswith((".yaml", ".yml")) and not Path(name).is_absolute():
            name = str(path.parent / name)  # a template file beside the study file
        try:
            names.append(load_template(name).name)
        except TemplateError as exc:
            raise fail(["templates", i], str(exc)) from None
        templates.append(name)
    for key, values in (("models", [m.label for m in models]), ("templates", names)):
        for i, value in enumerate(values):
            if value in values[:i]:
                at = [key, i, "label"] if key == "models" else [key, i]
                raise fail(at, f"{value!r} appears twice" + (
                    " (give the models distinct labels)" if key == "models" else ""))
    return Study(name=data["name"], path=path, spec=data, models=models,
                 templates=templates, answer_modes=list(modes),
                 option_orders=list(data.get("option_orders", ["stored"])),
                 seeds=list(data.get("seeds", [0])),
                 metric={"scorer": "robust", "group": "coarse", **data.get("metric", {})})

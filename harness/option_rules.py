"""Which `ubench run` options mean nothing in a given command line, so that it refuses them.

An option that only acts with another (`--batch-poll` without `--batch`, `--judge-base-url`
without `--judge`, `--api-version` for a model that is not `azure/`) would otherwise be dropped
without a word, and the user would believe it applied. Each rule names the option and, when it
would be ignored, why, naming the other flag; the CLI turns the first into one line and exit 2.
Only options given on the command line are checked: a default never conflicts.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from harness.adapters import split_spec
from harness.adapters.presets import PRESETS, capabilities, is_reasoning_model

# (option's parameter name, its flag, why it is ignored given every value, or None)
Rule = tuple[str, str, Callable[[Mapping[str, Any]], "str | None"]]


def _provider(v: Mapping[str, Any]) -> tuple[str, str] | None:
    try:
        return split_spec(v["model"])
    except ValueError:  # the run refuses the model itself (exit 2)
        return None


def _local(v: Mapping[str, Any]) -> str | None:
    """The options of an HTTP request mean nothing to a model that is not behind a server."""
    spec = _provider(v)
    return f"with --model {v['model']} (it sends no request to a server)" \
        if spec and not capabilities(spec[0]).server else None


def _sends(v: Mapping[str, Any]) -> str | None:
    """Where to send, with which key, how long to wait: nothing to a run that sends no request
    (a local backend, or --export-batch, which only writes the request files)."""
    return "with --export-batch (nothing is sent)" if v["export_batch"] else _local(v)


def _not_online(v: Mapping[str, Any]) -> str | None:
    """Pacing acts on online requests; an exported or batched run sends none (or only the
    online fallback's)."""
    if v["export_batch"]:
        return "with --export-batch (nothing is sent)"
    if v["batch"] and not v["batch_online_fallback"]:
        return "with --batch (a batch is not paced) unless --batch-online-fallback"
    return None


def _reasoning(v: Mapping[str, Any]) -> bool:
    """o-series and GPT-5 through a preset: the adapter drops every sampling parameter."""
    spec = _provider(v)
    return bool(spec and spec[0] in PRESETS and is_reasoning_model(spec[1]))


def _sampling(v: Mapping[str, Any]) -> str | None:
    return (f"with --model {v['model']} (a reasoning model takes only the default sampling)"
            if _reasoning(v) else None)


def _reasoning_effort(v: Mapping[str, Any]) -> str | None:
    if local := _local(v):
        return local
    spec = _provider(v)
    if spec and spec[0] == "openai" and not is_reasoning_model(spec[1]):
        return f"with --model {v['model']} (not a reasoning model: o-series or GPT-5)"
    return None


RUN_RULES: list[Rule] = [
    ("judge_base_url", "--judge-base-url", lambda v: None if v["judge"] else "without --judge"),
    # with a fallback only the online answers could be judged: a judge section over a part
    ("judge", "--judge", lambda v: "with --export-batch (nothing is answered)" if v["export_batch"]
     else "with --batch (batch answers are not judged; run online to judge)" if v["batch"]
     else None),
    ("vllm_args", "--vllm-args", lambda v: None if v["serve"] else "without --serve"),
    ("vllm_python", "--vllm-python", lambda v: None if v["serve"] else "without --serve"),
    ("serve_timeout", "--serve-timeout", lambda v: None if v["serve"] else "without --serve"),
    ("batch_poll", "--batch-poll", lambda v: "with --export-batch (nothing is polled)"
     if v["export_batch"] else None if v["batch"] else "without --batch"),
    ("batch_online_fallback", "--batch-online-fallback",
     lambda v: "with --export-batch (nothing is sent)" if v["export_batch"]
     else None if v["batch"] else "without --batch"),
    ("batch_max_requests", "--batch-max-requests",
     lambda v: None if v["batch"] or v["export_batch"] else "without --batch or --export-batch"),
    ("batch_size", "--batch-size", lambda v: None if (_provider(v) or ("",))[0] == "transformers"
     else f"with --model {v['model']} (it applies to transformers/ models)"),
    ("api_version", "--api-version", lambda v: None if (_provider(v) or ("azure",))[0] == "azure"
     else f"with --model {v['model']} (it applies to azure/ models)"),
    ("revision", "--revision", lambda v: "with --dataset sample (the bundled sample has one "
     "version)" if v["dataset"] == "sample" else None),
    ("base_url", "--base-url", _sends),
    ("api_key_env", "--api-key-env", _sends),
    ("max_attempts", "--max-attempts", lambda v: "with --export-batch (nothing is sent)"
     if v["export_batch"] else None),
    ("image_detail", "--image-detail", _local),
    ("extra_body", "--extra-body", _local),
    ("max_response_bytes", "--max-response-bytes", _local),
    ("timeout", "--timeout", lambda v: None if v["judge"] and not v["export_batch"]
     else _sends(v)),
    ("reasoning_effort", "--reasoning-effort", _reasoning_effort),
    ("temperature", "--temperature", _sampling),
    ("top_p", "--top-p", _sampling),
    ("max_rpm", "--max-rpm", _not_online),
    ("max_tpm", "--max-tpm", _not_online),
    ("adaptive_concurrency", "--adaptive-concurrency", _not_online),
    ("max_cost", "--max-cost", lambda v: "with --export-batch (nothing is sent)"
     if v["export_batch"] else None),
]


def ignored_option(rules: list[Rule], values: Mapping[str, Any], given: set[str]) -> str | None:
    """`--X has no effect with/without --Y ...` for the first given option the command line makes
    meaningless, else None."""
    for name, flag, why in rules:
        if name in given and (reason := why(values)):
            return f"{flag} has no effect {reason}"
    return None

EXTRACT_RULES: list[Rule] = [
    ("judge_base_url", "--judge-base-url", lambda v: None if v["judge"] else "without --judge"),
]

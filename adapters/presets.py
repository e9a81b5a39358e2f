"""Hosted providers by name: `gemini/MODEL` → the provider's OpenAI-compatible endpoint and key.

Each preset is an endpoint, the environment variable its key is usually in, how the key is sent,
and the capabilities of the provider's OpenAI-compatible layer, as data the run checks before it
sends anything (README, "Paid APIs"). `--base-url` always overrides the endpoint.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

AZURE_API_VERSION = "2024-10-21"  # a GA version of the Azure OpenAI data-plane API
# OpenAI families that take max_completion_tokens and only the default temperature.
_REASONING = re.compile(r"^(o\d|gpt-5)")


@dataclass(frozen=True)
class Capabilities:
    """What a provider's endpoint does, as far as known; the run refuses an option that needs
    what it lacks, before any request (logprobs: harness.adapters.answer_modes; the Batch API:
    harness.run.runner.check_answer_mode)."""
    logprobs: bool = True  # returns token logprobs (--answer-mode logprobs)
    batch_api: bool = True  # OpenAI's Files and Batches endpoints, as --batch drives them
    server: bool = True  # reached over HTTP (False: a local backend; no server options apply)


@dataclass(frozen=True)
class Preset:
    """A hosted provider's fixed settings, so `--model provider:name` needs no URL or flags."""
    name: str
    base_url: str | None  # None: needs something from the environment (Azure's resource)
    key_env: str
    image_detail: str | None = None  # sent with every image; None: leave it to the provider
    auth: str = "bearer"  # "bearer": Authorization: Bearer KEY; "api-key": api-key: KEY
    capabilities: Capabilities = Capabilities()


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", image_detail="high"),
    # Azure has a Batch API, but on "Global-Batch" deployments, at the resource's own
    # /openai/files and /openai/batches with its api-key header and api-version: not the
    # deployment URL and bearer key the batch client here uses.
    Preset("azure", None, "AZURE_OPENAI_API_KEY", image_detail="high", auth="api-key",
           capabilities=Capabilities(batch_api=False)),
    # Gemini and Anthropic also ignore an image's `detail` and `seed` (README, "Paid APIs").
    Preset("gemini", "https://generativelanguage.googleapis.com/v1beta/openai",
           "GEMINI_API_KEY", capabilities=Capabilities(logprobs=False, batch_api=False)),
    Preset("anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY",
           capabilities=Capabilities(logprobs=False, batch_api=False)),
    # What else OpenRouter supports depends on the model it routes to.
    Preset("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY",
           capabilities=Capabilities(batch_api=False)),
    Preset("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY",  # ignores `detail`
           capabilities=Capabilities(batch_api=False)),
)}
# Providers without a preset: a vLLM server has no Files or Batches endpoints (its offline
# runner reads --export-batch's files); the local backends call no API.
_UNPRESET: dict[str, Capabilities] = {
    "vllm": Capabilities(batch_api=False),
    "transformers": Capabilities(batch_api=False, server=False),
    "random": Capabilities(logprobs=False, batch_api=False, server=False),
}


def capabilities(provider: str) -> Capabilities:
    """What `provider`'s endpoint (or backend) supports."""
    preset = PRESETS.get(provider)
    return preset.capabilities if preset else _UNPRESET.get(provider, Capabilities())


def is_reasoning_model(model: str) -> bool:
    """OpenAI o-series and GPT-5 models: max_completion_tokens, default temperature only."""
    return bool(_REASONING.match(model.rsplit("/", 1)[-1]))


def endpoint(preset: Preset, model: str, api_version: str | None) -> tuple[str | None, str]:
    """The preset's base URL for `model` and the query string its requests carry."""
    if preset.name != "azure":
        base = os.environ.get("OPENAI_BASE_URL") if preset.name == "openai" else None
        return base or preset.base_url, ""
    version = api_version or os.environ.get("OPENAI_API_VERSION") or AZURE_API_VERSION
    resource = os.environ.get("AZURE_OPENAI_ENDPOINT")
    base = f"{resource.rstrip('/')}/openai/deployments/{model}" if resource else None
    return base, f"api-version={version}"

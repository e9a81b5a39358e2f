"""Model backends behind one interface; `create_adapter` turns a `provider/model` spec into one."""
from __future__ import annotations

import os
from typing import Sequence

from harness import config

from .base import Adapter, AdapterError, ChatRequest, ChatResponse, GenerationParams
from .presets import PRESETS

PROVIDERS = ("openai", "vllm", "transformers", "random",
             *(name for name in PRESETS if name != "openai"))
VLLM_DEFAULT_BASE_URL = "http://localhost:8000/v1"

__all__ = ["Adapter", "AdapterError", "ChatRequest", "ChatResponse", "GenerationParams",
           "create_adapter", "split_spec", "PROVIDERS"]


def split_spec(spec: str) -> tuple[str, str]:
    """`provider/model`, split at the first slash (`vllm/Qwen/Qwen2-VL-7B-Instruct`)."""
    provider, _, model = spec.partition("/")
    if provider not in PROVIDERS:
        raise ValueError(f"--model {spec!r}: unknown provider {provider!r}; "
                         f"use one of {', '.join(PROVIDERS)} (e.g. openai/gpt-4o, vllm/MODEL, "
                         "transformers/MODEL, random; hosted: gemini/, anthropic/, openrouter/, "
                         "together/, azure/DEPLOYMENT)")
    if provider != "random" and not model:
        raise ValueError(f"--model {spec!r}: missing the model name after '{provider}/'")
    return provider, model


def create_adapter(spec: str, *, base_url: str | Sequence[str] | None = None,
                   api_key_env: str | None = None, seed: int | None = 0,
                   timeout: float = config.TIMEOUT_S, concurrency: int = config.CONCURRENCY,
                   image_detail: str | None = None,
                   batch_size: int = 8, reasoning_effort: str | None = None,
                   extra_body: dict | None = None, api_version: str | None = None,
                   max_response_bytes: int | None = None, sends: bool = True) -> Adapter:
    """The adapter for `spec`; several base URLs (replicas of one model) give a `PooledAdapter`.
    `sends` false: it only writes request bodies (--export-batch), so it needs no credentials
    and no endpoint."""
    provider, model = split_spec(spec)
    base_urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
    if len(base_urls) > 1:
        if provider == "random":
            raise ValueError("--base-url: the random baseline calls no server")
        from .pool import PooledAdapter

        replicas = [create_adapter(spec, base_url=url, api_key_env=api_key_env, seed=seed,
                                   timeout=timeout, concurrency=concurrency,
                                   image_detail=image_detail, reasoning_effort=reasoning_effort,
                                   extra_body=extra_body, api_version=api_version,
                                   max_response_bytes=max_response_bytes) for url in base_urls]
        from .redact import redact_url

        return PooledAdapter(replicas, [redact_url(url) for url in base_urls])
    base_url = base_urls[0] if base_urls else None
    if provider == "random":
        from .random_baseline import RandomAdapter

        return RandomAdapter(seed)
    if provider == "transformers":
        try:
            from .transformers_local import TransformersAdapter
        except ImportError as exc:
            raise ValueError(f"--model {spec!r} needs torch and transformers ({exc}); install "
                             "them with: pip install -e '.[local]'") from None
        return TransformersAdapter(spec, model, batch_size=batch_size)
    from .openai_compat import OpenAICompatAdapter
    from .presets import endpoint, is_reasoning_model
    from .reply import MAX_RESPONSE_BYTES

    preset = PRESETS.get(provider)
    query, auth = "", "bearer"
    if preset is not None:
        key_var = api_key_env or preset.key_env
        preset_url, query = endpoint(preset, model, api_version)
        detail = image_detail or preset.image_detail
        auth = preset.auth
        if base_url is None and preset_url is None and sends:
            raise ValueError(f"--model {spec!r}: set AZURE_OPENAI_ENDPOINT "
                             "(https://RESOURCE.openai.azure.com), or give --base-url")
    else:
        key_var = api_key_env or "VLLM_API_KEY"
        base_url = base_url or VLLM_DEFAULT_BASE_URL
        detail = image_detail  # vLLM ignores detail; send it only when asked
    api_key = os.environ.get(key_var)
    if sends and preset is not None and not api_key and base_url is None and (
            provider != "openai" or not os.environ.get("OPENAI_BASE_URL")):
        raise ValueError(f"--model {spec!r}: set {key_var} (or --api-key-env NAME), "
                         "or point --base-url at an OpenAI-compatible server")
    if preset is not None:
        base_url = base_url or preset_url
    return OpenAICompatAdapter(spec, model, base_url=base_url, api_key=api_key, timeout=timeout,
                               image_detail=detail, concurrency=concurrency, query=query,
                               auth=auth, reasoning=preset is not None and is_reasoning_model(model),
                               reasoning_effort=reasoning_effort, extra_body=extra_body,
                               key_env=key_var,
                               max_response_bytes=max_response_bytes or MAX_RESPONSE_BYTES)

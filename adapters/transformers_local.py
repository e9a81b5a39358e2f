"""In-process backend: a Hugging Face vision-language model run with transformers' own `generate`.

The runner sends one request per item, concurrently; this adapter queues them and a single worker
runs `generate` on batches of up to `batch_size` (left padded) in a thread, so the event loop keeps
reading and encoding images meanwhile. The prompt is the model's own chat template applied to the
same provider-neutral messages every backend gets. torch and transformers are imported only here.
"""
from __future__ import annotations

import asyncio
import base64
import io
import time
from typing import Any

import torch
import transformers
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from .base import Adapter, AdapterError, ChatRequest, ChatResponse, GenerationParams


class ModelLoadError(ValueError):
    """The model or its processor cannot be used for an image benchmark."""


class TransformersAdapter(Adapter):
    def __init__(self, spec: str, model: str, *, batch_size: int = 8):
        self.spec = spec
        self.model_name = model
        self.batch_size = max(1, batch_size)
        self.processor = _load_processor(model)
        cuda = torch.cuda.is_available()
        try:
            # On a GPU, accelerate places the weights (several GPUs too); on a CPU, plain float32.
            self.model = AutoModelForImageTextToText.from_pretrained(
                model, dtype="auto" if cuda else torch.float32,
                device_map="auto" if cuda else None)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load {model!r} as an image-text-to-text model: {exc}"
                                 ) from None
        self.model.eval()
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "model": self.model_name,
                "model_class": type(self.model).__name__,
                "processor_class": type(self.processor).__name__,
                "dtype": str(self.model.dtype).removeprefix("torch."),
                "device": str(self.model.device),
                "transformers": transformers.__version__, "torch": torch.__version__}

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def _serve(self) -> None:
        """Take what is waiting (up to a batch of equal settings), generate, answer, repeat."""
        assert self._queue is not None
        held: list = []
        while True:
            if not held:
                held.append(await self._queue.get())
            await asyncio.sleep(0)  # let requests issued in the same tick join the batch
            while not self._queue.empty():
                held.append(self._queue.get_nowait())
            params = held[0][0].params
            batch = [e for e in held if e[0].params == params][: self.batch_size]
            held = [e for e in held if not any(e is b for b in batch)]
            live = [(r, f) for r, f in batch if not f.done()]  # caller may have been cancelled
            if not live:
                continue
            try:
                results = await asyncio.to_thread(self._generate, [r for r, _ in live], params)
            except Exception as exc:  # one failed batch fails its requests, never the worker
                results = [AdapterError("server", f"generate failed: {type(exc).__name__}: {exc}",
                                        retryable=False)] * len(live)
            for (_, future), result in zip(live, results):
                if future.done():
                    continue
                if isinstance(result, AdapterError):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _generate(self, requests: list[ChatRequest], params: GenerationParams
                  ) -> list[ChatResponse | AdapterError]:
        """One `generate` call for every request whose image decodes; runs in a worker thread."""
        results: list[ChatResponse | AdapterError | None] = [None] * len(requests)
        texts, images, index = [], [], []
        for i, request in enumerate(requests):
            try:
                image = decode_data_url(request.image_data_url)
            except ValueError as exc:
                results[i] = AdapterError("client", f"item {request.item_id}: field 'image': {exc}",
                                          retryable=False)
                continue
            try:  # in the order the image parts appear (few-shot examples name theirs)
                shown = [decode_data_url(request.example_images[part["image_id"]].data_url)
                         if "image_id" in part else image
                         for msg in request.messages for part in msg["content"]
                         if part["type"] == "image"]
            except ValueError as exc:
                results[i] = AdapterError("client", f"item {request.item_id}: field 'examples': "
                                          f"{exc}", retryable=False)
                continue
            texts.append(self.processor.apply_chat_template(
                request.messages, add_generation_prompt=True, tokenize=False))
            images.append(shown)
            index.append(i)
        if not index:
            return results
        start = time.perf_counter()
        inputs = self.processor(text=texts, images=images if any(images) else None,
                                padding=True, return_tensors="pt")
        # Pixel values in the weights' dtype (bfloat16 on most GPUs); token ids stay integers.
        inputs = inputs.to(self.model.device, dtype=self.model.dtype)
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens,
                                  "do_sample": params.temperature > 0}
        if kwargs["do_sample"]:
            kwargs["temperature"] = params.temperature
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
            if params.seed is not None:
                torch.manual_seed(params.seed)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        latency = time.perf_counter() - start
        new_tokens = output[:, inputs["input_ids"].shape[1]:].cpu()
        eos = self.model.generation_config.eos_token_id
        eos_ids = set([eos] if isinstance(eos, int) else (eos or []))
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        for row, i in enumerate(index):
            ids = new_tokens[row].tolist()
            stop = next((k for k, t in enumerate(ids) if t in eos_ids), None)
            kept = ids if stop is None else ids[:stop]
            results[i] = ChatResponse(
                text=self.processor.decode(kept, skip_special_tokens=True),
                finish_reason="length" if stop is None else "stop",
                usage={"prompt_tokens": int(prompt_lengths[row]),
                       "completion_tokens": len(kept) + (stop is not None)},
                latency_s=latency,
                meta={"batch_size": len(index)},
            )
        return results

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None


def _load_processor(model: str):
    try:
        processor = AutoProcessor.from_pretrained(model)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the processor of {model!r}: {exc}") from None
    if getattr(processor, "image_processor", None) is None:
        # AutoProcessor falls back to a bare tokenizer for processors it does not know: the images
        # would be dropped without a word and the run would measure a text-only model.
        raise ModelLoadError(f"{model!r}: the processor ({type(processor).__name__}) has no image "
                             "processor, so images would be ignored; use a vision-language model "
                             "folder with preprocessor_config.json / processor_config.json")
    if not getattr(processor, "chat_template", None):
        raise ModelLoadError(f"{model!r}: the processor has no chat template, so prompts cannot be "
                             "rendered the way the model was trained")
    processor.tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    return processor


def decode_data_url(url: str | None) -> Image.Image:
    """`data:image/...;base64,...` → an RGB PIL image."""
    if not url or not url.startswith("data:") or "," not in url:
        raise ValueError("expected a base64 data URL")
    try:
        data = base64.b64decode(url.partition(",")[2], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot decode the image: {exc}") from None

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
from typing import Any, cast

import torch
import transformers
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, LogitsProcessor

from .answer_modes import token_letter
from .base import Adapter, AdapterError, ChatRequest, ChatResponse, GenerationParams

# How a letter may be written as one token: spaces, brackets, emphasis, a closing mark.
_LETTER_SPELLINGS = [pre + "{}" + post for pre in ("", " ", "(", " (", "**", "\n")
                     for post in ("", ")", ".", ":")]


class ModelLoadError(ValueError):
    """The model or its processor cannot be used for an image benchmark."""


class TransformersAdapter(Adapter):
    """A Hugging Face model in this process, for runs without a server; requests are batched."""
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
        self._letter_ids: dict[str, dict[str, list[int]]] = {}
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    def describe(self) -> dict[str, Any]:
        """Model, classes, device and library versions, for the manifest."""
        return {"spec": self.spec, "model": self.model_name,
                "model_class": type(self.model).__name__,
                "processor_class": type(self.processor).__name__,
                "dtype": str(self.model.dtype).removeprefix("torch."),
                "device": str(self.model.device),
                "transformers": transformers.__version__, "torch": torch.__version__}

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Queue the request for the worker, which batches whatever is waiting into one generate."""
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        assert self._queue is not None  # made with the worker
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
                shown = [decode_data_url((request.example_images or {})[part["image_id"]].data_url)
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
            return _answered(results)
        start = time.perf_counter()
        inputs = self.processor(text=texts, images=images if any(images) else None,
                                padding=True, return_tensors="pt")
        # Pixel values in the weights' dtype (bfloat16 on most GPUs); token ids stay integers.
        inputs = inputs.to(self.model.device, dtype=self.model.dtype)
        letters = [self.letter_token_ids(requests[i].option_letters) for i in index]
        if params.answer_mode == "logprobs":
            for i, response in zip(index, self._letter_logprobs(inputs, letters, params, start)):
                results[i] = response
            return _answered(results)
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens,
                                  "do_sample": params.temperature > 0}
        if params.answer_mode == "choice":  # one letter, then the end of the turn
            kwargs["max_new_tokens"] = min(params.max_tokens, 2)
            kwargs["logits_processor"] = [LetterChoice(letters, inputs["input_ids"].shape[1],
                                                       self._eos_ids())]
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
        eos_ids = set(self._eos_ids())
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
        return _answered(results)

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    def letter_token_ids(self, letters: str) -> dict[str, list[int]]:
        """Every single token of the vocabulary that spells one of `letters` as an answer would
        (`A`, ` A`, `(A`, `A)`, ...), found by encoding those spellings and by the vocabulary's
        own space markers (`ĠA`, `▁A`); each is checked by decoding it back."""
        if letters not in self._letter_ids:
            tokenizer = self.processor.tokenizer
            vocab = tokenizer.get_vocab()
            special = set(tokenizer.all_special_ids)
            found: dict[str, list[int]] = {}
            for letter in letters:
                ids = {vocab[t] for t in (letter, f"Ġ{letter}", f"▁{letter}", f"Ġ({letter}",
                                          f"▁({letter}") if t in vocab}
                for spelling in _LETTER_SPELLINGS:
                    encoded = tokenizer.encode(spelling.format(letter), add_special_tokens=False)
                    if len(encoded) == 1:
                        ids.add(encoded[0])
                found[letter] = sorted(i for i in ids if i not in special and token_letter(
                    tokenizer.decode([i]), letters) == letter)
            self._letter_ids[letters] = found
        return self._letter_ids[letters]

    def _letter_logprobs(self, inputs, letters: list[dict[str, list[int]]],
                         params: GenerationParams, start: float) -> list[ChatResponse]:
        """One forward pass: the next-token distribution after the prompt and the assistant
        prefix, as OpenAI's `logprobs.content` (one position): every letter token, plus the
        `top_logprobs` most probable other tokens; the text is the most probable token."""
        with torch.inference_mode():
            logits = self.model(**inputs).logits[:, -1, :].float()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        latency = time.perf_counter() - start
        decode = self.processor.tokenizer.decode
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        out = []
        for row, ids_by_letter in enumerate(letters):
            lp = logprobs[row]
            letter_ids = [i for ids in ids_by_letter.values() for i in ids]
            others = [i for i in torch.topk(lp, min(lp.numel(), (params.top_logprobs or 20)
                                                    + len(letter_ids))).indices.tolist()
                      if i not in letter_ids][: params.top_logprobs or 20]
            best = int(lp.argmax())
            alternatives = [{"token": decode([i]), "logprob": float(lp[i])}
                            for i in sorted(letter_ids + others, key=lambda i: -float(lp[i]))]
            text = decode([best], skip_special_tokens=True)
            out.append(ChatResponse(
                text=text, finish_reason="length",
                usage={"prompt_tokens": int(prompt_lengths[row]), "completion_tokens": 0},
                latency_s=latency, meta={"batch_size": len(letters)},
                logprobs=[{"token": decode([best]), "logprob": float(lp[best]),
                           "top_logprobs": alternatives}]))
        return out

    async def aclose(self) -> None:
        """Stop the batching worker; the model stays loaded until the adapter is dropped."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None


def _answered(results: list[ChatResponse | AdapterError | None]) -> list[ChatResponse | AdapterError]:
    """`results` once each slot holds its request's response or error (filled by index above)."""
    assert None not in results
    return cast(list[ChatResponse | AdapterError], results)


class LetterChoice(LogitsProcessor):
    """`--answer-mode choice` at generation: the first new token must spell an option letter,
    and the next ends the turn. Each letter competes with its total probability over its token
    spellings (put on its most likely spelling), so greedy decoding answers the argmax of the
    letter distribution that `logprobs` mode reports, and sampling draws from it."""

    def __init__(self, letters: list[dict[str, list[int]]], prompt_length: int, eos: list[int]):
        self.letters = letters
        self.prompt_length = prompt_length
        self.eos = eos

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        """Scores with only option letters allowed at the first step, the end of turn after it."""
        masked = torch.full_like(scores, float("-inf"))
        if input_ids.shape[1] > self.prompt_length:
            masked[:, self.eos] = 0.0
            return masked
        for row, ids_by_letter in enumerate(self.letters):
            for ids in ids_by_letter.values():
                if ids:
                    values = scores[row, ids]
                    masked[row, ids[int(values.argmax())]] = torch.logsumexp(values, dim=0)
        return masked


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

"""The simplest clients one could write: a bare loop over the exported items, `concurrency` at a time.

    python bench/peers/bare_loop.py {sdk|aiohttp} SUBSET_DIR BASE_URL CONCURRENCY OUT.jsonl

`sdk`: the openai SDK's `AsyncOpenAI` with its default transport. `aiohttp`: one aiohttp session and
orjson, nothing else: the floor of what any Python client pays per request on this machine. Each
image file is read and base64-encoded once (cached), so what differs is the cost per request.
"""
from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path


def sdk_client(base_url: str):
    import openai

    client = openai.AsyncOpenAI(api_key="EMPTY", base_url=base_url, max_retries=3)

    async def ask(messages: list) -> str:
        result = await client.chat.completions.create(model="test", temperature=0, max_tokens=16,
                                                      messages=messages)
        return result.choices[0].message.content or ""
    return ask, client.close


def aiohttp_client(base_url: str, concurrency: int):
    import aiohttp
    import orjson

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
    url = base_url.rstrip("/") + "/chat/completions"

    async def ask(messages: list) -> str:
        body = orjson.dumps({"model": "test", "temperature": 0, "max_tokens": 16,
                             "messages": messages})
        async with session.post(url, data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            resp.raise_for_status()
            return orjson.loads(await resp.read())["choices"][0]["message"]["content"] or ""
    return ask, session.close


async def main(kind: str, subset: Path, base_url: str, concurrency: int, out: Path) -> None:
    items = [json.loads(line) for line in (subset / "items.jsonl").read_text().splitlines()]
    ask, close = sdk_client(base_url) if kind == "sdk" else aiohttp_client(base_url, concurrency)
    images: dict[str, str] = {}
    slots = asyncio.Semaphore(concurrency)

    def data_url(path: str) -> str:
        if path not in images:
            mime = "image/jpeg" if path.endswith(".jpg") else "image/png"
            images[path] = f"data:{mime};base64," + base64.b64encode(
                (subset / path).read_bytes()).decode()
        return images[path]

    async def one(item: dict) -> dict:
        async with slots:
            answer = await ask([{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(item["image"])}},
                {"type": "text", "text": item["prompt"]}]}])
        return {"id": item["id"], "answer": answer, "correct": answer.strip()[:1] == item["gold"]}

    records = await asyncio.gather(*(one(item) for item in items))
    await close()
    out.write_text("".join(json.dumps(r) + "\n" for r in records))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]),
                     Path(sys.argv[5])))

"""The simplest client one could write: a bare `AsyncOpenAI` loop over the exported items.

    python bench/peers/bare_openai.py SUBSET_DIR BASE_URL CONCURRENCY OUT.jsonl

Each image file is read and base64-encoded once (cached), so what is left to compare is the SDK's
own cost per request; the answers are written one JSON line per item.
"""
from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path

import openai


async def main(subset: Path, base_url: str, concurrency: int, out: Path) -> None:
    items = [json.loads(line) for line in (subset / "items.jsonl").read_text().splitlines()]
    client = openai.AsyncOpenAI(api_key="EMPTY", base_url=base_url, max_retries=3)
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
            result = await client.chat.completions.create(
                model="test", temperature=0, max_tokens=16,
                messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": data_url(item["image"])}},
                    {"type": "text", "text": item["prompt"]}]}])
        answer = result.choices[0].message.content or ""
        return {"id": item["id"], "answer": answer, "correct": answer.strip()[:1] == item["gold"]}

    records = await asyncio.gather(*(one(item) for item in items))
    await client.close()
    out.write_text("".join(json.dumps(r) + "\n" for r in records))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))

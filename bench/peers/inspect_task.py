"""The uBench image multiple-choice task for inspect_ai, on the benchmark's exported items.

    UBENCH_SUBSET=SUBSET_DIR inspect eval bench/peers/inspect_task.py --model openai-api/ubench/test

Same prompt text and image per item as `ubench run`; images are given as file paths, which
inspect_ai reads and base64-encodes itself for each request, as its users do.
"""
import json
import os
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageUser, ContentImage, ContentText, GenerateConfig
from inspect_ai.scorer import pattern
from inspect_ai.solver import generate


@task
def ubench_mcq() -> Task:
    subset = Path(os.environ["UBENCH_SUBSET"])
    samples = []
    for line in (subset / "items.jsonl").read_text().splitlines():
        item = json.loads(line)
        content = [ContentImage(image=str(subset / item["image"])), ContentText(text=item["prompt"])]
        samples.append(Sample(id=item["id"], input=[ChatMessageUser(content=content)],
                              target=item["gold"]))
    return Task(dataset=MemoryDataset(samples), solver=generate(), scorer=pattern(r"^\s*([A-H])"),
                config=GenerateConfig(temperature=0, max_tokens=16))

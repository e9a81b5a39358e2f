"""lmms-eval task functions for the benchmark's exported uBench items (copied next to the YAML).

Same prompt text and image per item as `ubench run`; the image is opened as a PIL image, which
lmms-eval's OpenAI backend encodes to base64 PNG itself for each request, as its users' tasks do.
"""
import os

from PIL import Image

SUBSET = os.environ["UBENCH_SUBSET"]


def doc_to_visual(doc):
    return [Image.open(os.path.join(SUBSET, doc["image"])).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["prompt"]


def process_results(doc, results):
    return {"accuracy": float(results[0].strip()[:1] == doc["gold"])}

"""Synthetic data in the exact uBench schema: the bundled demo sample and full-size replicas.

Everything here is generated (deterministic, microscopy-like images drawn with numpy); none of it is
real uBench data, and scores on it mean nothing about a model. It exists so that the real loading
code path can be exercised offline.
"""
from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image as PILImage

from .data import LETTERS, SAMPLE_PATH

NONE_OPTION = "none of the above"


def ubench_features(label_names: list[str]):
    """The uBench column layout as `datasets.Features` (types of [T] columns are best guesses)."""
    import datasets as hf

    question = {
        "question": hf.Value("string"),
        "options": hf.Sequence(hf.Value("string")),
        "answer": hf.Value("string"),
        "answer_idx": hf.Value("int64"),
        "id": hf.Value("string"),
        "name": hf.Value("string"),
    }
    return hf.Features({
        "image_id": hf.Value("string"),
        "image": hf.Image(),
        "label": hf.ClassLabel(names=label_names),
        "label_name": hf.Value("string"),
        "dataset": hf.Value("string"),
        "domain": hf.Value("string"),
        "institution": hf.Value("string"),
        "license": hf.Value("string"),
        "microns_per_pixel": hf.Value("float64"),
        "modality": hf.Value("string"),
        "ncbitaxon_id": hf.Value("int64"),
        "ncbitaxon_name": hf.Value("string"),
        "pmid": hf.Value("string"),
        "split": hf.Value("string"),
        "stain": hf.Value("string"),
        "subdomain": hf.Value("string"),
        "submodality": hf.Value("string"),
        "synthetic": hf.Value("bool"),
        "captions": {
            "classification_0": {
                "options": hf.Sequence(hf.Value("string")),
                "answer_idx": hf.Value("int64"),
            }
        },
        "questions": {qt: dict(question) for qt in
                      ("classification", "domain", "modality", "stain", "subdomain", "submodality")},
        "bbox": hf.Sequence(hf.Value("float64")),
        "polygon": hf.Sequence(hf.Value("float64")),
    })


# One profile per source dataset: metadata, look of the images, and the fine-grained classes.
PROFILES: dict[str, dict[str, Any]] = {
    "acevedo_et_al_2020": dict(
        domain="pathology", subdomain="hematology", modality="light microscopy",
        submodality="brightfield microscopy", stain="Giemsa", look="blood",
        question="A Giemsa-stained light micrograph displaying human peripheral blood cells. "
                 "As a blood cell recognition system, identify the correct cell type:",
        classes=["basophil", "eosinophil", "erythroblast", "immature granulocyte", "lymphocyte",
                 "monocyte", "neutrophil", "platelet"]),
    "kather_et_al_2016": dict(
        domain="pathology", subdomain="colorectal cancer", modality="light microscopy",
        submodality="brightfield microscopy", stain="hematoxylin and eosin", look="he",
        question="An H&E-stained micrograph of human colorectal tissue. Which tissue class is shown?",
        classes=["adipose", "background", "debris", "lymphocytes", "mucus", "normal mucosa",
                 "stroma", "tumor epithelium"]),
    "empiar_sbfsem": dict(
        domain="biology", subdomain="cell biology", modality="electron microscopy",
        submodality="serial block-face scanning electron microscopy", stain=None, look="em",
        question="A serial block-face electron micrograph. Which organism or structure is shown?",
        classes=["C. elegans", "mouse brain", "platynereis", "zebrafish", "yeast"]),
    "eulenberg_et_al_2017_darkfield": dict(
        domain="biology", subdomain="cell cycle", modality="light microscopy",
        submodality="darkfield microscopy", stain=None, look="dark",
        question="A darkfield image of a Jurkat cell from imaging flow cytometry. "
                 "Which cell-cycle phase is shown?",
        classes=["G1", "S", "G2", "prophase", "metaphase", "anaphase", "telophase"]),
    "nirschl_unpub_fluorescence": dict(
        domain="biology", subdomain="cell biology", modality="fluorescence microscopy",
        submodality="widefield fluorescence microscopy", stain="immunofluorescence", look="fluo",
        question="A fluorescence micrograph of cultured neurons. Which structure is labelled?",
        classes=["actin", "axon initial segment", "dendrites", "microtubules", "mitochondria",
                 "nuclei"]),
    None: dict(  # Held et al. 2010: null `dataset`, sub-dataset named by the stain
        domain="biology", subdomain="cell cycle", modality="fluorescence microscopy",
        submodality="widefield fluorescence microscopy", stain="H2B-mCherry", look="fluo",
        question="A fluorescence micrograph of HeLa cell nuclei (H2B-mCherry). Which phenotype?",
        classes=["interphase", "prometaphase", "metaphase", "anaphase", "apoptosis", "artefact",
                 "early anaphase", "polylobed", "grape"]),
    "opencell": dict(  # left out by the paper's default filter
        domain="biology", subdomain="cell biology", modality="fluorescence microscopy",
        submodality="confocal microscopy", stain="split-mNeonGreen", look="fluo",
        question="A confocal image of a tagged human protein. Where does it localise?",
        classes=["cytoplasm", "nucleolus", "nucleoplasm", "vesicles"]),
}

COARSE_QUESTIONS = {
    "domain": ("Which scientific domain does this microscopy image belong to?",
               ["biology", "pathology"]),
    "subdomain": ("Which subdomain best describes this image?",
                  ["cell biology", "cell cycle", "colorectal cancer", "hematology", "neuroscience"]),
    "modality": ("Which microscopy modality was used to acquire this image?",
                 ["electron microscopy", "fluorescence microscopy", "light microscopy"]),
    "submodality": ("Which microscopy submodality was used?",
                    ["brightfield microscopy", "confocal microscopy", "darkfield microscopy",
                     "serial block-face scanning electron microscopy",
                     "widefield fluorescence microscopy"]),
    "stain": ("Which stain or contrast agent was used?",
              ["Giemsa", "H2B-mCherry", "hematoxylin and eosin", "immunofluorescence",
               "split-mNeonGreen"]),
}


def synthetic_image(look: str, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A microscopy-like RGB image: blobby 'cells' on a background typical of the modality."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    field = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(3, 9))):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(size / 14, size / 6)
        field += np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
    field = np.clip(field, 0, 1)
    noise = rng.normal(0, 0.05, (size, size)).astype(np.float32)
    if look == "he":  # pink stroma, purple nuclei
        bg = np.array([235, 180, 210], np.float32)
        fg = np.array([110, 50, 150], np.float32)
    elif look == "blood":  # pale background, violet cells
        bg = np.array([230, 220, 225], np.float32)
        fg = np.array([120, 60, 160], np.float32)
    elif look == "fluo":  # dark background, bright green or red signal
        bg = np.zeros(3, np.float32)
        fg = np.array([40, 230, 60], np.float32) if rng.random() < 0.5 else np.array([230, 40, 60],
                                                                                     np.float32)
    elif look == "dark":
        bg = np.array([10, 10, 10], np.float32)
        fg = np.array([200, 200, 200], np.float32)
    else:  # em: grey texture
        bg = np.array([150, 150, 150], np.float32)
        fg = np.array([40, 40, 40], np.float32)
        noise *= 3
    img = bg + (fg - bg) * field[..., None] + 255 * noise[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _mcq(rng: np.random.Generator, question: str, answer: str, pool: list[str],
         n_options: int) -> dict[str, Any]:
    """Options as uBench stores them: shuffled distractors plus the answer, then 'none of the above'."""
    others = [c for c in pool if c != answer]
    picked = [str(x) for x in rng.choice(others, size=min(n_options - 2, len(others)), replace=False)]
    options = picked + [answer]
    rng.shuffle(options)
    options.append(NONE_OPTION)
    return {"question": question, "options": options, "answer": answer,
            "answer_idx": options.index(answer), "id": str(uuid.UUID(bytes=rng.bytes(16))),
            "name": question.split(" ")[0].lower()}


def make_row(rng: np.random.Generator, dataset: str | None, label_names: list[str],
             image_size: int = 96, encoder=encode_png) -> dict[str, Any]:
    """One synthetic row of the given source dataset, in the uBench schema."""
    prof = PROFILES[dataset]
    label = str(rng.choice(prof["classes"]))
    questions: dict[str, Any] = {
        "classification": _mcq(rng, prof["question"], label, prof["classes"],
                               min(6, len(prof["classes"]) + 1)),
    }
    for qtype, (text, pool) in COARSE_QUESTIONS.items():
        answer = prof[qtype]
        questions[qtype] = None if answer is None else _mcq(
            rng, text, answer, pool, 4 if qtype == "modality" else 6)
    image_id = str(uuid.UUID(bytes=rng.bytes(16)))
    return {
        "image_id": image_id,
        "image": {"bytes": encoder(synthetic_image(prof["look"], rng, image_size)),
                  "path": f"{image_id}.png"},
        "label": label_names.index(label),
        "label_name": label,
        "dataset": dataset,
        "domain": prof["domain"],
        "institution": "synthetic",
        "license": "CC-BY-SA-4.0",
        "microns_per_pixel": 0.5,
        "modality": prof["modality"],
        "ncbitaxon_id": 9606,
        "ncbitaxon_name": "Homo sapiens",
        "pmid": None,
        "split": "test",
        "stain": prof["stain"],
        "subdomain": prof["subdomain"],
        "submodality": prof["submodality"],
        "synthetic": True,
        "captions": {"classification_0": {"options": [f"an image of {label}"], "answer_idx": 0}},
        "questions": questions,
        "bbox": None,
        "polygon": None,
    }


def all_label_names() -> list[str]:
    return sorted({c for p in PROFILES.values() for c in p["classes"]})


def iter_sample_rows(seed: int = 0, rows_per_dataset: int = 4) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    labels = all_label_names()
    for dataset in PROFILES:
        for _ in range(rows_per_dataset):
            yield make_row(rng, dataset, labels)


def write_sample(path: Path = SAMPLE_PATH, seed: int = 0) -> Path:
    """(Re)generate the bundled sample Parquet file; deterministic for a given seed."""
    import datasets as hf

    rows = list(iter_sample_rows(seed))
    ds = hf.Dataset.from_list(rows, features=ubench_features(all_label_names()))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


if __name__ == "__main__":
    print(write_sample())

"""Synthetic data in the exact uBench schema: the bundled demo sample and full-size replicas.

Everything here is generated (deterministic, microscopy-like images drawn with numpy); none of it is
real uBench data, and scores on it mean nothing about a model. It exists so that the real loading
code path can be exercised offline.
"""
from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image as PILImage

from harness.data.sources import SAMPLE_PATH

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
PROFILES: dict[str | None, dict[str, Any]] = {
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
    """PNG bytes of a pixel array: the synthetic rows carry images as a real dataset does."""
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
             image_size: int = 96, encoder=encode_png, *, profile: dict[str, Any] | None = None,
             image_maker: Callable[[np.random.Generator], tuple[bytes, str]] | None = None
             ) -> dict[str, Any]:
    """One synthetic row of the given source dataset, in the uBench schema.

    `profile` overrides `PROFILES[dataset]`; `image_maker(rng) -> (bytes, extension)` overrides the
    default small PNG.
    """
    prof = profile or PROFILES[dataset]
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
    if image_maker is None:
        image_bytes, ext = encoder(synthetic_image(prof["look"], rng, image_size)), "png"
    else:
        image_bytes, ext = image_maker(rng)
    return {
        "image_id": image_id,
        "image": {"bytes": image_bytes, "path": f"{image_id}.{ext}"},
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
    """Every class name of the sample profiles, sorted: the shared label vocabulary of the rows."""
    return sorted({c for p in PROFILES.values() for c in p["classes"]})


def iter_sample_rows(seed: int = 0, rows_per_dataset: int = 4) -> Iterator[dict[str, Any]]:
    """The bundled sample dataset's rows, reproducible from `seed`."""
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


# ---------------------------------------------------------------------------------------------
# Full-size replica: 17,315 rows in the real schema, for benchmarks of the whole pipeline.

REPLICA_ROWS = 17_315
_KINDS: dict[str, dict[str, Any]] = {
    "hema": dict(domain="pathology", subdomain="hematology", modality="light microscopy",
                 submodality="brightfield microscopy", stain="Giemsa", look="blood"),
    "cyto": dict(domain="pathology", subdomain="cytopathology", modality="light microscopy",
                 submodality="brightfield microscopy", stain="Papanicolaou", look="blood"),
    "crc": dict(domain="pathology", subdomain="colorectal cancer", modality="light microscopy",
                submodality="brightfield microscopy", stain="hematoxylin and eosin", look="he"),
    "heart": dict(domain="pathology", subdomain="cardiology", modality="light microscopy",
                  submodality="brightfield microscopy", stain="hematoxylin and eosin", look="he"),
    "neuro": dict(domain="pathology", subdomain="neuroscience", modality="light microscopy",
                  submodality="brightfield microscopy", stain="immunohistochemistry", look="he"),
    "fluo": dict(domain="biology", subdomain="cell biology", modality="fluorescence microscopy",
                 submodality="widefield fluorescence microscopy", stain="immunofluorescence",
                 look="fluo"),
    "cycle": dict(domain="biology", subdomain="cell cycle", modality="fluorescence microscopy",
                  submodality="widefield fluorescence microscopy", stain="H2B-mCherry", look="fluo"),
    "bright": dict(domain="biology", subdomain="cell cycle", modality="light microscopy",
                   submodality="brightfield microscopy", stain="unstained", look="blood"),
    "dark": dict(domain="biology", subdomain="cell cycle", modality="light microscopy",
                 submodality="darkfield microscopy", stain=None, look="dark"),
    "em": dict(domain="biology", subdomain="cell biology", modality="electron microscopy",
               submodality="serial block-face scanning electron microscopy", stain=None, look="em"),
    "cryo": dict(domain="biology", subdomain="cell biology", modality="electron microscopy",
                 submodality="cryo-electron tomography", stain="unstained", look="em"),
    "pollen": dict(domain="biology", subdomain="botany", modality="light microscopy",
                   submodality="brightfield microscopy", stain="unstained", look="blood"),
}
# slug (None: Held et al. 2010, named by its stain), images, kind, classes, format, width×height
# ranges. Per-dataset counts are made up but add up to the real totals (16,130 images in the
# paper's datasets, of which 1,486 in the two eulenberg sets left out of the fine total, 934 rows
# with a null stain question, 1,185 images in the two datasets the paper leaves out).
REPLICA_DATASETS: tuple[tuple[Any, ...], ...] = (
    ("acevedo_et_al_2020", 1700, "hema", 8, "JPEG", (360, 360), (363, 363)),
    ("burgess_et_al_2024_contour", 300, "fluo", 3, "PNG", (256, 256), (256, 256)),
    ("burgess_et_al_2024_eccentricity", 300, "fluo", 3, "PNG", (256, 256), (256, 256)),
    ("burgess_et_al_2024_texture", 300, "fluo", 3, "PNG", (256, 256), (256, 256)),
    ("empiar_sbfsem", 191, "em", 5, "PNG", (1024, 2048), (1024, 2048)),
    ("colocalization_benchmark", 400, "fluo", 4, "PNG", (512, 512), (512, 512)),
    ("eulenberg_et_al_2017_brightfield", 743, "bright", 7, "PNG", (66, 66), (66, 66)),
    ("eulenberg_et_al_2017_darkfield", 743, "dark", 7, "PNG", (66, 66), (66, 66)),
    ("eulenberg_et_al_2017_epifluorescence", 743, "fluo", 5, "PNG", (66, 66), (66, 66)),
    (("GalT\u2013EGFP",), 600, "cycle", 8, "PNG", (384, 640), (384, 640)),
    (("H2B-mCherry",), 900, "cycle", 9, "PNG", (384, 640), (384, 640)),
    ("hussain_et_al_2019", 500, "cyto", 4, "JPEG", (2048, 2048), (1536, 1536)),
    ("icpr2020_pollen", 800, "pollen", 4, "PNG", (84, 84), (84, 84)),
    ("jung_et_al_2022", 1000, "hema", 5, "PNG", (128, 128), (128, 128)),
    ("kather_et_al_2016", 1250, "crc", 8, "PNG", (150, 150), (150, 150)),
    ("kather_et_al_2018", 1600, "crc", 8, "PNG", (224, 224), (224, 224)),
    ("kather_et_al_2018_val7k", 1000, "crc", 8, "PNG", (224, 224), (224, 224)),
    ("nirschl_et_al_2018", 500, "heart", 2, "JPEG", (250, 250), (250, 250)),
    ("nirschl_unpub_fluorescence", 700, "fluo", 13, "PNG", (512, 1024), (512, 1024)),
    ("tang_et_al_2019", 700, "neuro", 4, "PNG", (256, 256), (256, 256)),
    ("wong_et_al_2022", 610, "neuro", 4, "PNG", (256, 256), (256, 256)),
    ("wu_et_al_2023", 550, "cryo", 2, "PNG", (512, 512), (512, 512)),
    ("opencell", 1105, "fluo", 4, "PNG", (600, 600), (600, 600)),
    ("sirinukunwattana_et_al_2016", 80, "crc", 2, "PNG", (567, 775), (430, 522)),
)
_GREY_LOOKS = ("em", "dark")


def replica_profile(entry: tuple[Any, ...]) -> tuple[str | None, dict[str, Any]]:
    """(dataset slug, profile) of one replica entry; a tuple slug is a null dataset named by its stain."""
    slug, _, kind, n_classes, *_ = entry
    prof = dict(_KINDS[kind])
    if isinstance(slug, tuple):  # Held et al. 2010: null dataset, the stain names it
        name, slug = slug[0], None
        prof["stain"] = name
    else:
        name = slug
    prof["classes"] = [f"{name} phenotype {i + 1}" for i in range(n_classes)]
    prof["question"] = (f"A {prof['modality']} image from {name}. Which of these best "
                        "describes what is shown?")
    return slug, prof


def replica_label_names() -> list[str]:
    """Every class name of the full-size replica, sorted, as `all_label_names` for the sample."""
    return sorted({c for e in REPLICA_DATASETS for c in replica_profile(e)[1]["classes"]})


_NOISE_TILE = np.random.default_rng(7).normal(0, 1, (251, 257)).astype(np.float32)
_GRAIN = {"fluo": 1.5, "dark": 1.5, "he": 5.0, "blood": 4.0, "em": 7.0}  # noise σ, grey levels


def replica_image(look: str, rng: np.random.Generator, width: int, height: int,
                  image_format: str) -> bytes:
    """A microscopy-like image of the given size, cheaply: drawn small, upscaled, grain added."""
    small = synthetic_image(look, rng, size=min(128, max(width, height)))
    img = PILImage.fromarray(small).resize((width, height), PILImage.Resampling.BICUBIC)
    pixels = np.asarray(img, np.int16)
    dy, dx = (int(v) for v in rng.integers(0, 251, 2))
    tile = np.roll(_NOISE_TILE * _GRAIN[look], (dy, dx), axis=(0, 1)).astype(np.int16)
    grain = np.tile(tile, (height // 251 + 1, width // 257 + 1))[:height, :width]
    pixels = np.clip(pixels + grain[..., None], 0, 255).astype(np.uint8)
    out = PILImage.fromarray(pixels[..., 0] if look in _GREY_LOOKS else pixels)
    buf = io.BytesIO()
    if image_format == "JPEG":
        out.save(buf, format="JPEG", quality=90)
    else:
        out.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def replica_plan(seed: int = 0) -> list[int]:
    """The dataset (index into REPLICA_DATASETS) of each of the 17,315 rows, shuffled."""
    plan = np.repeat(np.arange(len(REPLICA_DATASETS)), [e[1] for e in REPLICA_DATASETS])
    np.random.default_rng(seed).shuffle(plan)
    return [int(i) for i in plan]


def replica_row(index: int, dataset_index: int, label_names: list[str], seed: int = 0
                ) -> dict[str, Any]:
    """Row `index` of the replica; depends only on (seed, index), not on who generates it."""
    entry = REPLICA_DATASETS[dataset_index]
    slug, prof = replica_profile(entry)
    (w_lo, w_hi), (h_lo, h_hi), fmt = entry[5], entry[6], entry[4]
    ext = "jpg" if fmt == "JPEG" else "png"

    def image_maker(rng: np.random.Generator) -> tuple[bytes, str]:
        width, height = int(rng.integers(w_lo, w_hi + 1)), int(rng.integers(h_lo, h_hi + 1))
        return replica_image(prof["look"], rng, width, height, fmt), ext

    rng = np.random.default_rng([seed, index])
    return make_row(rng, slug, label_names, profile=prof, image_maker=image_maker)


def _write_replica_shard(args: tuple[Path, list[tuple[int, int]], int, int]) -> tuple[str, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, rows, seed, row_group = args
    labels = replica_label_names()
    schema = ubench_features(labels).arrow_schema
    with pq.ParquetWriter(str(path), schema, compression="none") as writer:
        for start in range(0, len(rows), row_group):
            batch = [replica_row(i, d, labels, seed) for i, d in rows[start:start + row_group]]
            writer.write_table(pa.Table.from_pylist(batch, schema=schema),
                               row_group_size=row_group)
    return path.name, len(rows)


def write_replica(out: Path, rows: int = REPLICA_ROWS, *, seed: int = 0, workers: int = 2,
                  rows_per_shard: int = 1024, row_group: int = 64) -> list[Path]:
    """Write the first `rows` rows of the replica as Parquet shards that `--dataset OUT` reads.

    Shards are written in parallel by `workers` processes; small row groups keep a streaming
    reader's memory low, as the Hub's Arrow shards do.
    """
    from concurrent.futures import ProcessPoolExecutor

    if not 1 <= rows <= REPLICA_ROWS:
        raise ValueError(f"rows must be between 1 and {REPLICA_ROWS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("ubench-replica-*.parquet"):
        old.unlink()
    plan = list(enumerate(replica_plan(seed)))[:rows]
    n = -(-rows // rows_per_shard)
    jobs = [(out / f"ubench-replica-{k:05d}-of-{n:05d}.parquet",
             plan[k * rows_per_shard:(k + 1) * rows_per_shard], seed, row_group)
            for k in range(n)]
    if workers <= 1:
        done = [_write_replica_shard(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(_write_replica_shard, jobs))
    return [out / name for name, _ in done]


if __name__ == "__main__":
    print(write_sample())

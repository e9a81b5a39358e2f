"""A tiny randomly initialised Idefics3 model folder, built offline from config objects.

A stand-in for "a local model folder": real Idefics3 classes, a byte-level tokenizer made here with
the `tokenizers` library, the Idefics3 chat template, the PIL image processor, `save_pretrained`.
Nothing is downloaded. `steer_to` writes a `sequence_bias` into generation_config.json, so the
random model answers one letter and then stops, through the real `generate` path.
"""
from __future__ import annotations

from pathlib import Path

# The chat template Idefics3 checkpoints ship (image part first, "User:" / "Assistant:" turns).
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                  "<image>", "<global-img>",
                  *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]
IMAGE_SIZE, PATCH_SIZE, SCALE_FACTOR = 32, 8, 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR ** 2


def make_tokenizer(letter_merges: str = ""):
    """Byte-level BPE: one token per byte, every string encodable and decodable. With
    `letter_merges`, those letters also get the merged tokens GPT-style tokenizers have for an
    answer letter, ` A` (`ĠA`) and `(A`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(alphabet)})
    merges = [(prefix, letter) for letter in letter_merges for prefix in ("Ġ", "(")]
    vocab.update({a + b: len(vocab) + i for i, (a, b) in enumerate(merges)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<pad>", additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=4096, padding_side="left")


def build_tiny_idefics3(folder: Path, seed: int = 0, letter_merges: str = "",
                        init_std: float = 0.02) -> Path:
    """Save a ~0.1M-parameter random Idefics3 model, processor and chat template to `folder`
    (`letter_merges`: see `make_tokenizer`; a larger `init_std` makes the random model's answers
    depend more on the question)."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = make_tokenizer(letter_merges)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE)
    config = Idefics3Config(
        image_token_id=ids["<image>"], scale_factor=SCALE_FACTOR, tie_word_embeddings=False,
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": IMAGE_SIZE,
                       "patch_size": PATCH_SIZE},
        # head_dim 32: the smallest vLLM's CPU attention kernels support.
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64,
                     "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "max_position_embeddings": 4096,
                     "bos_token_id": ids["<|im_start|>"], "eos_token_id": ids["<end_of_utterance>"],
                     "pad_token_id": ids["<pad>"], "initializer_range": init_std},
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.bos_token_id = ids["<|im_start|>"]
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.generation_config.pad_token_id = ids["<pad>"]
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def steer_to(folder: Path, letter: str) -> None:
    """Make greedy decoding answer `letter`, then end the turn, whatever the random weights say."""
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(folder)
    (letter_id,) = tokenizer.encode(letter, add_special_tokens=False)
    eos = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    config = GenerationConfig.from_pretrained(folder)
    # Random logits are ~0.1 apart; these biases dwarf them. After the letter, end-of-turn wins.
    config.sequence_bias = [[[letter_id], 50.0], [[letter_id, eos], 200.0]]
    config.save_pretrained(folder)

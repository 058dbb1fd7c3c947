"""Tiny, randomly initialised LLaVA-style checkpoints built offline, for tests and examples.

Nothing here downloads anything: the tokenizer is a character-level vocabulary built
with `tokenizers`, the models are stock `LlavaForConditionalGeneration` /
`LlavaNextForConditionalGeneration` built from a config, and `save_tiny_llava` writes
them with `save_pretrained` so they are loaded back through exactly the code path a
user's checkpoint takes (`vlmspec.load(target=PATH)`).

    path = save_tiny_llava(tmp_path / "target", seed=0)
    pipe = vlmspec.load(target=str(path), drafter="prompt-lookup")
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import torch

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", IMAGE_TOKEN, "<|im_start|>", "<|im_end|>"]

# ChatML with image placeholders: the same shape of template real LLaVA checkpoints ship.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyLlavaConfig:
    """Sizes of a tiny LLaVA model. Defaults give ~16 image tokens and a ~106-token vocabulary."""

    kind: str = "llava"  # "llava" | "llava_next"
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_hidden: int = 32
    vision_layers: int = 1
    image_size: int = 32
    patch_size: int = 8
    max_positions: int = 1024
    # A large init spread makes logits peaky, so argmax ties (which would make
    # greedy comparisons depend on float rounding) practically never happen.
    initializer_range: float = 0.3
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.kind not in ("llava", "llava_next"):
            raise ValueError(f"TinyLlavaConfig.kind must be 'llava' or 'llava_next', got {self.kind!r}")
        if self.image_size % self.patch_size:
            raise ValueError("TinyLlavaConfig.image_size must be a multiple of patch_size")


def build_tokenizer():
    """A character-level fast tokenizer with ChatML and image special tokens."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + chars)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN, "<|im_start|>", "</s>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _vision_config(cfg: TinyLlavaConfig):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_hidden * 2,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=2,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        projection_dim=cfg.vision_hidden,
        initializer_range=cfg.initializer_range,
    )


def _text_config(cfg: TinyLlavaConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions,
        initializer_range=cfg.initializer_range,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_llava(cfg: TinyLlavaConfig = TinyLlavaConfig(), seed: int = 0):
    """Return `(model, processor)` for a randomly initialised tiny LLaVA or LLaVA-NeXT."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        LlavaProcessor,
    )

    tokenizer = build_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    common = dict(
        vision_config=_vision_config(cfg),
        text_config=_text_config(cfg, tokenizer),
        image_token_id=image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    size = cfg.image_size
    torch.manual_seed(seed)
    if cfg.kind == "llava":
        config = LlavaConfig(**common)
        model = LlavaForConditionalGeneration(config)
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
        processor_cls = LlavaProcessor
    else:
        pinpoints = [[size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
        config = LlavaNextConfig(**common, image_grid_pinpoints=pinpoints)
        model = LlavaNextForConditionalGeneration(config)
        image_processor = LlavaNextImageProcessor(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_grid_pinpoints=pinpoints,
        )
        processor_cls = LlavaNextProcessor
    processor = processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model = model.to(cfg.dtype).eval()
    return model, processor


def save_tiny_llava(path: str | Path, cfg: TinyLlavaConfig = TinyLlavaConfig(), seed: int = 0) -> Path:
    """Build a tiny model and `save_pretrained` it (model + processor) into `path`."""
    path = Path(path)
    model, processor = build_tiny_llava(cfg, seed=seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path

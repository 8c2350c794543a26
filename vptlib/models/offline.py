"""The offline path's models, built here with no download: ViT-B/32's exact architecture (random weights,
for shape, cost and memory tests; never a reported accuracy) and the tiny CLIP that the
tests and the smoke profile use, with a byte-level tokenizer.

``write_tiny_clip`` writes a few-layer random CLIP with the real patch size and image
size (so preprocessing and the 49-patch sequence are the same as ViT-B/32), a
byte-level tokenizer with no merges and a CLIP image processor, all built locally.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vptlib.atomic import atomic_dir

from . import open_clip_format


def vit_b32_config() -> CLIPConfig:
    """The architecture of ``openai/clip-vit-base-patch32`` (weights not included)."""
    return CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=8,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
            hidden_act="quick_gelu",
        ),
        projection_dim=512,
        logit_scale_init_value=2.6592,
    )


# The architecture of every hub CLIP a profile names (its model, its backbones), so tests build
# each offline with random weights and run every method on it. PubMedCLIP is OpenAI's ViT-B/32
# fine-tuned on ROCO (Eslami et al. 2023): its config.json has ViT-B/32's towers, widths,
# patch size, projection and tokenizer, so every method runs on it unchanged.
def laion_b32_config() -> CLIPConfig:
    """``laion/CLIP-ViT-B-32-laion2B-s34B-b79K``: ViT-B/32's shapes with open_clip's exact GELU
    in both towers (its config.json's hidden_act), where OpenAI's CLIP has quick GELU."""
    config = vit_b32_config()
    config.text_config.hidden_act = config.vision_config.hidden_act = "gelu"
    return config


ARCHITECTURES = {
    "openai/clip-vit-base-patch32": vit_b32_config,
    "flaviagiammarino/pubmed-clip-vit-base-patch32": vit_b32_config,
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": laion_b32_config,
}
# The backbones in open_clip's layout (vptlib.models.open_clip_format), by their towers' shapes.
OPEN_CLIP_ARCHITECTURES = {
    "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224": open_clip_format.biomedclip_towers,
}


def tiny_clip_config(layers: int = 3, width: int = 64, image_size: int = 112, patch_size: int = 16) -> CLIPConfig:
    """A few-layer CLIP for tests and the smoke profile.

    112-pixel images in 16-pixel patches give ViT-B/32's sequence (49 patches + CLS)
    at a quarter of the pixels, which keeps the offline profile fast on two cores.
    """
    return CLIPConfig(
        text_config=dict(
            vocab_size=514,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
        ),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
            hidden_act="quick_gelu",
        ),
        projection_dim=32,
        logit_scale_init_value=2.6592,
    )


def _byte_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def byte_level_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the 256 bytes (plus end-of-word forms), no merges.

    Every string tokenizes, one token per byte, so text code paths run with no download.
    """
    chars = _byte_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def write_tiny_clip(out: str | Path, seed: int = 0, layers: int = 3, width: int = 64) -> Path:
    """Write a random tiny CLIP with tokenizer and processor that ``load_clip`` reads."""
    out = Path(out)
    torch.manual_seed(seed)
    config = tiny_clip_config(layers, width)
    save_clip(CLIPModel(config).eval(), out)
    return out


def save_clip(model: CLIPModel, out: str | Path, notes: dict[str, str] | None = None) -> Path:
    """Save a CLIP with the byte-level tokenizer and a processor sized for its vision tower.

    The folder is written whole or not at all (:func:`vptlib.atomic.atomic_dir`), so a
    killed save never leaves weights that ``make`` would take as up to date. ``notes``
    are extra text files (name -> text) written into the same folder.
    """
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        byte_level_tokenizer().save_pretrained(tmp)
        size = model.config.vision_config.image_size
        CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
            tmp
        )
        for name, text in (notes or {}).items():
            (tmp / name).write_text(text)
    return out

"""BiomedCLIP's open_clip checkpoint, loaded into transformers' classes.

open_clip and timm both import torchvision, which cannot load beside the CPU torch of these
machines, so the project depends on neither. BiomedCLIP
(``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) ships ``open_clip_config.json``
and ``open_clip_pytorch_model.bin``; its two towers are architectures transformers has:

* the image tower is timm's ``vit_base_patch16_224`` wrapped by open_clip's ``TimmModel`` with
  ``timm_pool: ""`` and ``timm_proj: "linear"`` (open_clip ``timm_model.py``): the trunk keeps
  its own pooling, the class token after the final LayerNorm, and the head is a bias-free
  ``Linear(768, 512)``. timm's ViT is transformers' ``ViTModel`` without its pooler: a patch
  convolution with a bias, the class token and position embedding added once, no LayerNorm
  before the blocks, pre-norm blocks with exact GELU, one final LayerNorm (eps 1e-6 throughout);
  timm's fused ``qkv`` weight splits into query, key and value in that order;
* the text tower is open_clip's ``HFTextEncoder`` (``hf_model.py``) around a BERT with
  ``hf_pooler_type: cls_last_hidden_state_pooler`` (the first token of the last hidden state,
  no BERT pooler) and ``hf_proj_type: mlp``: ``Linear(768, 640) -> GELU -> Linear(640, 512)``,
  both bias-free (640 = (768 + 512) // 2), with the attention mask ``input_ids != pad``.

Every size is read off the checkpoint's tensors and ``open_clip_config.json`` (the BERT's own
config.json lives in another repository, so it is not needed); the head count is the width
over 64, as in ViT-B and BERT-base. The model presents the part of ``CLIPModel``'s interface
the methods use: ``vision_model`` (``pooler_output`` is the pooled, pre-projection feature),
``visual_projection``, ``get_image_features``, ``get_text_features`` and ``logit_scale``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel, ViTConfig, ViTModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vptlib.data.dataset import Preprocess
from vptlib.errors import UserError

CLIP_PIXELS = Preprocess()  # CLIP's preprocessing: BiomedCLIP's preprocess_cfg repeats its mean and std
CONFIG = "open_clip_config.json"
WEIGHTS = "open_clip_pytorch_model.bin"
HEAD_WIDTH = 64  # ViT-B's and BERT-base's width per attention head
# Checkpoint keys that nothing reads: BERT's pooler (unused by the CLS pooler) and position-id buffers.
IGNORED = ("text.transformer.pooler.", "position_ids")


def is_open_clip_folder(folder: Path) -> bool:
    """A folder in open_clip's layout (its config and no transformers config.json)."""
    return (folder / CONFIG).is_file() and not (folder / "config.json").is_file()


@dataclass
class TowerConfigs:
    """The configs of both towers as the checkpoint and ``open_clip_config.json`` give them."""

    vision: ViTConfig
    text: BertConfig
    embed_dim: int
    text_proj_hidden: int
    context_length: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int


def read_configs(folder: Path, state: dict[str, torch.Tensor]) -> TowerConfigs:
    """Both towers' configs, checked against what this loader knows how to map."""
    where = folder / CONFIG
    try:
        cfg = json.loads(where.read_text(encoding="utf-8"))
        model_cfg, vision_cfg, text_cfg = cfg["model_cfg"], cfg["model_cfg"]["vision_cfg"], cfg["model_cfg"]["text_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{where} is not an open_clip model config ({type(exc).__name__}: {exc})") from None
    known = {
        "vision_cfg.timm_model_name": (vision_cfg.get("timm_model_name") or "").startswith("vit_"),
        "vision_cfg.timm_pool": vision_cfg.get("timm_pool", "") in ("", "token"),
        "vision_cfg.timm_proj": vision_cfg.get("timm_proj") == "linear",
        "text_cfg.hf_proj_type": text_cfg.get("hf_proj_type") == "mlp",
        "text_cfg.hf_pooler_type": text_cfg.get("hf_pooler_type") == "cls_last_hidden_state_pooler",
    }
    unknown = [k for k, ok in known.items() if not ok]
    if unknown:
        raise UserError(
            f"{where}: {', '.join(unknown)} is not BiomedCLIP's (a timm ViT, token pool, linear projection; a BERT "
            f"with the CLS pooler and an MLP projection); this loader maps that architecture only"
        )
    try:
        patch = state["visual.trunk.patch_embed.proj.weight"]  # (D, 3, P, P)
        pos = state["visual.trunk.pos_embed"]  # (1, 1 + N, D)
        words = state["text.transformer.embeddings.word_embeddings.weight"]  # (V, Dt)
        positions = state["text.transformer.embeddings.position_embeddings.weight"]  # (Lmax, Dt)
        types = state["text.transformer.embeddings.token_type_embeddings.weight"]  # (T, Dt)
        inner = state["text.transformer.encoder.layer.0.intermediate.dense.weight"]  # (I, Dt)
        mlp = state["visual.trunk.blocks.0.mlp.fc1.weight"]  # (Iv, D)
        proj_hidden = state["text.proj.0.weight"].shape[0]
    except KeyError as exc:
        raise UserError(f"{folder / WEIGHTS} is not a BiomedCLIP checkpoint: it has no {exc.args[0]}") from None
    width, text_width = patch.shape[0], words.shape[1]
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    vision = ViTConfig(
        hidden_size=width,
        num_hidden_layers=_count(state, "visual.trunk.blocks."),
        num_attention_heads=width // HEAD_WIDTH,
        intermediate_size=mlp.shape[0],
        hidden_act="gelu",  # timm's nn.GELU: the exact erf form
        layer_norm_eps=1e-6,  # timm's ViT: partial(nn.LayerNorm, eps=1e-6)
        image_size=grid * patch.shape[2],
        patch_size=patch.shape[2],
        num_channels=patch.shape[1],
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    text = BertConfig(
        vocab_size=words.shape[0],
        hidden_size=text_width,
        num_hidden_layers=_count(state, "text.transformer.encoder.layer."),
        num_attention_heads=text_width // HEAD_WIDTH,
        intermediate_size=inner.shape[0],
        max_position_embeddings=positions.shape[0],
        type_vocab_size=types.shape[0],
        pad_token_id=0,  # BERT's [PAD]: open_clip masks input_ids != pad_token_id
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    pre = cfg.get("preprocess_cfg") or {}
    return TowerConfigs(
        vision,
        text,
        int(model_cfg["embed_dim"]),
        int(proj_hidden),
        int(text_cfg.get("context_length", 77)),
        tuple(pre.get("mean", CLIP_PIXELS.mean)),  # open_clip's default: CLIP's own normalisation
        tuple(pre.get("std", CLIP_PIXELS.std)),
        int(vision_cfg.get("image_size", vision.image_size)),
    )


def biomedclip_towers() -> TowerConfigs:
    """The shapes of ``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` (its
    ``open_clip_config.json``: timm's ``vit_base_patch16_224``, PubMedBERT-base, 512-d
    embeddings, context 256), for building it offline with random weights."""
    vision = ViTConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=224,
        patch_size=16,
        qkv_bias=True,
    )
    text = BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        type_vocab_size=2,
        pad_token_id=0,
    )
    return TowerConfigs(vision, text, 512, (768 + 512) // 2, 256, CLIP_PIXELS.mean, CLIP_PIXELS.std, 224)


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".", 1)[0] for k in state if k.startswith(prefix)})


class VisionTower(nn.Module):
    """timm's ViT as a CLIP vision tower: ``pooler_output`` is the class token after the final LayerNorm."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.vit = ViTModel(config, add_pooling_layer=False)

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        out = self.vit(pixel_values=pixel_values, **kwargs)
        h = out.last_hidden_state  # (B, 1 + N, D), after the final LayerNorm (timm's norm)
        return BaseModelOutputWithPooling(
            last_hidden_state=h, pooler_output=h[:, 0], hidden_states=out.hidden_states, attentions=out.attentions
        )


class OpenClipConfig:
    """What the methods read of a CLIPModel's config."""

    def __init__(self, towers: TowerConfigs):
        self.vision_config, self.text_config = towers.vision, towers.text
        self.projection_dim = towers.embed_dim
        self.model_type = "open_clip_biomedclip"


class BiomedCLIP(nn.Module):
    """BiomedCLIP in transformers' classes, with CLIPModel's interface for the frozen-feature methods."""

    def __init__(self, towers: TowerConfigs):
        super().__init__()
        self.config = OpenClipConfig(towers)
        self.vision_model = VisionTower(towers.vision)
        self.visual_projection = nn.Linear(towers.vision.hidden_size, towers.embed_dim, bias=False)
        self.text_model = BertModel(towers.text, add_pooling_layer=False)
        self.text_projection = nn.Sequential(
            nn.Linear(towers.text.hidden_size, towers.text_proj_hidden, bias=False),
            nn.GELU(),
            nn.Linear(towers.text_proj_hidden, towers.embed_dim, bias=False),
        )
        self.logit_scale = nn.Parameter(torch.tensor(0.0))

    def get_image_features(self, pixel_values: torch.Tensor) -> BaseModelOutputWithPooling:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output  # (B, D)
        return BaseModelOutputWithPooling(pooler_output=self.visual_projection(pooled))  # (B, E)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> BaseModelOutputWithPooling:
        if attention_mask is None:
            attention_mask = (input_ids != self.config.text_config.pad_token_id).long()
        h = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (T, L, Dt)
        return BaseModelOutputWithPooling(last_hidden_state=h, pooler_output=self.text_projection(h[:, 0]))  # (T, E)


def remap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's key names (timm's and BERT's) as :class:`BiomedCLIP` names them."""
    out: dict[str, torch.Tensor] = {}
    vit = "vision_model.vit."
    for key, value in state.items():
        if any(part in key for part in IGNORED):
            continue
        if key.startswith("text.transformer."):
            out["text_model." + key[len("text.transformer.") :]] = value
        elif key.startswith("text.proj."):
            out["text_projection." + key[len("text.proj.") :]] = value
        elif key == "visual.head.proj.weight":
            out["visual_projection.weight"] = value
        elif key == "logit_scale":
            out["logit_scale"] = value
        elif key == "visual.trunk.cls_token":
            out[vit + "embeddings.cls_token"] = value
        elif key == "visual.trunk.pos_embed":
            out[vit + "embeddings.position_embeddings"] = value
        elif key.startswith("visual.trunk.patch_embed.proj."):
            out[vit + "embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("visual.trunk.norm."):
            out[vit + "layernorm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("visual.trunk.blocks."):
            i, rest = key[len("visual.trunk.blocks.") :].split(".", 1)
            out.update(_block(f"{vit}layers.{i}.", rest, value))
        else:
            out[key] = value  # unknown: load_state_dict names it
    return out


# timm's block names -> transformers 5's ViTLayer names.
_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def _block(prefix: str, rest: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    module, param = rest.rsplit(".", 1)
    if module == "attn.qkv":  # (3D, D) or (3D,): query, key, value stacked in that order
        q, k, v = value.chunk(3, dim=0)
        att = prefix + "attention."
        return {f"{att}q_proj.{param}": q, f"{att}k_proj.{param}": k, f"{att}v_proj.{param}": v}
    if module not in _BLOCK:
        return {prefix + rest: value}  # unknown: load_state_dict names it
    return {f"{prefix}{_BLOCK[module]}.{param}": value}


def load(folder: Path, state: dict[str, torch.Tensor]) -> tuple[BiomedCLIP, TowerConfigs]:
    """A :class:`BiomedCLIP` holding ``state`` (read from ``open_clip_pytorch_model.bin``), every key accounted for."""
    towers = read_configs(folder, state)
    model = BiomedCLIP(towers)
    mapped = remap(state)
    try:
        missing, unexpected = model.load_state_dict(mapped, strict=False)
    except RuntimeError as exc:
        raise UserError(
            f"{folder / WEIGHTS}: the weights do not fit {CONFIG} ({str(exc).splitlines()[-1][:160]})"
        ) from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise UserError(
            f"{folder / WEIGHTS} is not a BiomedCLIP checkpoint: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model, towers


def image_processor(towers: TowerConfigs):
    """open_clip's inference preprocessing (resize the short side to the image size, bicubic, centre
    crop, normalise with ``preprocess_cfg``'s mean and std) as a CLIP image processor."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    size = towers.image_size
    return CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(towers.mean),
        image_std=list(towers.std),
        resample=3,  # PIL's BICUBIC, open_clip's InterpolationMode.BICUBIC
        do_convert_rgb=True,
    )

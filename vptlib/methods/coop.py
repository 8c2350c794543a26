"""CoOp, context optimisation (Zhou et al., IJCV 2022; KaiyangZhou/CoOp ``trainers/coop.py``,
``configs/trainers/CoOp/vit_b32.yaml``, ``scripts/coop/main.sh``).

Both encoders stay frozen; what trains is ``n_ctx`` context vectors in the text tower's
input, shared by every class (``CSC=False``) and placed before the class name
(``CLASS_TOKEN_POSITION=end``). The prompt of class ``c`` enters the text transformer as

    [SOS] [V_1] ... [V_n_ctx] [name of c] [.] [EOS]

one ``cat`` of the start token's embedding, the context and the rest
(``PromptLearner.forward``); the text feature is the final-layer-normed state at EOS,
projected. The logits are CLIP's: the temperature times the cosine similarity between
image and class text. Trainable parameters: ``n_ctx * W`` for the text width ``W``
(16 * 512 = 8,192 on ViT-B/32). The context starts from N(0, 0.02) (``CTX_INIT=""``) or
from the embeddings of a given phrase (``ctx_init``, e.g. "a photo of a"). The recipe is
the config's: SGD at lr 0.002 (momentum 0.9, weight decay 5e-4, Dassl's default), cosine
decay, 200 epochs at 16 shots, batch 32, every step on freshly augmented images through
the frozen image encoder, and the last epoch kept.

Where this differs from the paper's code: the warm-up (CoOp holds lr at 1e-5 for the
first epoch; the study's profiles warm up linearly, or not at all); the augmentation is
the study's (:class:`~vptlib.data.augment.Augment`), not random-resized crops and flips;
the class name is the class's phrase in :data:`NAMES` ("notumor" reads "no tumor").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Classifier, TextOptions, TrainDefaults, flag

DEFAULTS = TrainDefaults(epochs=200, lr=0.002, optimizer="sgd", weight_decay=5e-4)
# CoOp's config fixes every setting (no search; the last epoch in the paper): fixed_recipe in the registry.
BATCH_SIZE = 32  # vit_b32.yaml: DATALOADER.TRAIN_X.BATCH_SIZE (the profiles set the study's)
INIT_STD = 0.02  # nn.init.normal_(ctx_vectors, std=0.02)
# The class name each prompt ends with. CoOp uses the data set's class names as they are; the
# Kaggle folders' names, with "notumor" read as the phrase it abbreviates. None adds "tumor"
# (that would single out one of the three tumour classes).
NAMES = {"glioma": "glioma", "meningioma": "meningioma", "notumor": "no tumor", "pituitary": "pituitary"}


@dataclass
class Options(TextOptions):
    n_ctx: int = flag(16, "--n-ctx", "coop: learned context tokens (default 16, CoOp's N_CTX)")
    ctx_init: str = ""  # a phrase to start the context from (its length sets n_ctx); "": random


class ContextEmbedding(nn.Module):
    """The text tower's token embedding, with the learned context in the placeholder slots."""

    def __init__(self, embedding: nn.Embedding, ctx: torch.Tensor):
        super().__init__()
        self.embedding = embedding
        self.ctx = nn.Parameter(ctx)  # (n_ctx, W)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        e = self.embedding(input_ids)  # (T, L, W): SOS, n_ctx placeholders, name, ".", EOS, padding
        ctx = self.ctx.to(e.dtype).unsqueeze(0).expand(len(e), -1, -1)  # (T, n_ctx, W)
        start, rest = e[:, :1], e[:, 1 + len(self.ctx) :]
        return torch.cat([start, ctx, rest], dim=1)  # (T, L, W)


class CoOp(Classifier):
    trainable_patterns = ("text.embeddings.token_embedding.ctx",)  # what it trains (the contract test holds it to this)

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        model = copy.deepcopy(clip.model).requires_grad_(False)
        self.vision, self.visual_projection = model.vision_model, model.visual_projection
        self.text, self.text_projection = model.text_model, model.text_projection
        self.register_buffer("logit_scale", model.logit_scale.detach().exp().clone())
        tok = clip.tokenizer
        embedding = self.text.embeddings.token_embedding
        if opts.ctx_init:
            ids = tok(opts.ctx_init.replace("_", " "), return_tensors="pt")["input_ids"][0, 1:-1]
            with torch.no_grad():
                ctx = embedding(ids).clone().float()  # (n_ctx, W)
        else:
            ctx = torch.empty(opts.n_ctx, embedding.embedding_dim).normal_(std=INIT_STD)
        self.text.embeddings.token_embedding = ContextEmbedding(embedding, ctx)
        names = [NAMES.get(c, c.replace("_", " ")) for c in opts.class_names]
        prefix = opts.ctx_init.replace("_", " ") if opts.ctx_init else " ".join(["X"] * len(ctx))
        self.text_prompts = {c: [f"{prefix} {n}."] for c, n in zip(opts.class_names, names, strict=True)}
        self._tokens(tok, names, len(ctx))

    def _tokens(self, tok, names: list[str], n_ctx: int) -> None:
        """Token ids with ``n_ctx`` placeholders after SOS (the start token's id: any id but
        EOS serves, since the context replaces them, and EOS is where the feature is read)."""
        enc = tok([f"{n}." for n in names], padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        slots = torch.full((len(ids), n_ctx), int(ids[0, 0]))
        self.register_buffer("input_ids", torch.cat([ids[:, :1], slots, ids[:, 1:]], 1), persistent=False)
        mask = torch.cat([mask[:, :1], torch.ones_like(slots), mask[:, 1:]], 1)
        self.register_buffer("attention_mask", mask, persistent=False)

    def class_text(self) -> torch.Tensor:
        """``(C, d)`` unit-norm class features through the frozen text tower and the context."""
        pooled = self.text(input_ids=self.input_ids, attention_mask=self.attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled).float(), dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        img = self.visual_projection(self.vision(pixel_values=pixel_values).pooler_output)
        return self.logit_scale * F.normalize(img.float(), dim=-1) @ self.class_text().T

    def describe(self) -> str:
        return f"{len(self.text.embeddings.token_embedding.ctx)} context vectors in the text tower's input"


def build(clip, num_classes: int, opts: Options) -> CoOp:
    if not opts.ctx_init and opts.n_ctx < 1:
        raise ValueError(f"n_ctx must be >= 1, got {opts.n_ctx}")
    return CoOp(clip, num_classes, opts)

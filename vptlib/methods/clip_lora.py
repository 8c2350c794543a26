"""CLIP-LoRA (Zanella & Ben Ayed 2024; MaxZanella/CLIP-LoRA ``lora.py``).

Rank-2 LoRA (alpha 1, dropout 0.25) on the query, key and value projections of every
layer of **both** encoders, scaled by ``alpha / sqrt(r)`` (peft's ``use_rslora``), and
no new head: the logits are CLIP's own, the frozen temperature times the cosine
similarity between the image and one text per class, both computed through the
adapted encoders at every step. Cross-entropy on those logits; AdamW at 2e-4 (weight
decay 0.01) with cosine decay. CLIP-LoRA uses one template per class (its data set's
first), here the first of :data:`~vptlib.methods.text.TEMPLATES` with each class's
first phrase. Trainable parameters with ``L`` layers of width ``D`` per encoder and
rank ``r``: ``sum over encoders of L*3*2*r*D`` (ViT-B/32: 12*3*2*2*(768 + 512) = 184,320).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import vision_lora
from .base import Classifier, TextOptions, TrainDefaults
from .text import TEMPLATES, ClassTokens, class_prompts
from .vision_lora import PeftExport, adapt, check, lora_config

DEFAULTS = TrainDefaults(epochs=20, lr=2e-4, optimizer="adamw", weight_decay=0.01)
# The paper's budget (MaxZanella/CLIP-LoRA, n_iters = 500 * shots, last iterate, no validation).
# The study runs CLIP-LoRA under its own protocol instead (the Methods page says where it differs).
PAPER_ITERATIONS_PER_SHOT = 500


@dataclass
class Options(vision_lora.Options, TextOptions):
    """Vision LoRA's rank, alpha, dropout and targets (here in both encoders), plus the class
    texts (default template: ``TEMPLATES[0]``, one prompt per class)."""


class CLIPLoRA(Classifier):
    trainable_patterns = ("clip.*.lora_A.*", "clip.*.lora_B.*")  # what it trains (the contract test holds it to this)

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        self.clip = copy.deepcopy(clip.model).requires_grad_(False)
        adapt(self.clip, opts, rslora=True)
        self.register_buffer("logit_scale", self.clip.logit_scale.detach().exp().clone())
        every = class_prompts(opts.class_names, opts.templates or TEMPLATES[:1], opts.synonyms)
        self.text_prompts = {c: ps[:1] for c, ps in every.items()}  # one text per class
        self.tokens = ClassTokens(clip.tokenizer, self.text_prompts)
        self.rank = opts.rank
        self.peft_export = PeftExport(self.clip, "CLIPModel", "", lora_config(opts, True))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        text = self.clip.get_text_features(**self.tokens.batch())
        img = self.clip.get_image_features(pixel_values=pixel_values)
        text = F.normalize(text.pooler_output.float(), dim=-1)
        img = F.normalize(img.pooler_output.float(), dim=-1)
        return self.logit_scale * img @ text.T

    def describe(self) -> str:
        return f"rank-{self.rank} LoRA on q, k, v of both encoders (CLIP-LoRA); classes by text similarity"


def build(clip, num_classes: int, opts: Options) -> CLIPLoRA:
    check(opts)
    return CLIPLoRA(clip, num_classes, opts)

"""FLYP, "Finetune like you pretrain" (Goyal et al. 2022; locuslab/FLYP ``src/models/flyp_loss.py``).

Both CLIP encoders, their projections and the temperature train with CLIP's own
pretraining loss: each image of a batch is paired with a caption of its class (a
template x synonym drawn at random per image, per step), and the symmetric in-batch
cross-entropy pulls each image towards its caption and away from every other caption
of the batch, and each caption towards its image; targets are the diagonal. Captions
of the same class in one batch act as negatives, as in FLYP. The logit scale is
trainable and clipped at 100 after every step, as CLIP does. AdamW with cosine decay
(the engine's default schedule). Prediction is zero-shot style: cosine similarity
with the ensembled class texts (mean over all templates x synonyms).

Under data parallelism the in-batch loss needs every process's images: features and
labels are gathered, so two processes compute the same loss and gradients as one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .base import TextOptions, TrainDefaults
from .text_ce import TextCE

DEFAULTS = TrainDefaults(epochs=20, lr=1e-5, optimizer="adamw", weight_decay=0.1)
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clips the temperature so logits are scaled by at most 100


@dataclass
class Options(TextOptions):
    """The class texts; each caption is one template with one synonym of its class."""


class FLYP(TextCE):
    batch_loss_is_global = True  # the loss of the whole batch, on every process (see vptlib.runs.engine)

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__(clip, num_classes, opts)
        self.clip.logit_scale.requires_grad_(True)
        self._features: torch.Tensor | None = None
        self._captions: torch.Generator | None = None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        img = self.image_features(pixel_values)
        if not self.training:
            return self.clip.logit_scale.exp() * img @ self.class_text().T
        self._features = img  # the loss pairs these with captions
        with torch.no_grad():  # class logits for the training accuracy only
            return self.clip.logit_scale.exp() * img @ self.class_text().T

    def _caption_tokens(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One caption per image: a random prompt of its class, from a generator seeded per epoch."""
        if self._captions is None:  # the engine reseeds torch per (seed, epoch): same captions on resume
            self._captions = torch.Generator().manual_seed(torch.initial_seed())
        owner = self.tokens.owner.cpu()
        picks = []
        for c in labels.cpu().tolist():
            choices = torch.nonzero(owner == c).flatten()
            picks.append(int(choices[torch.randint(len(choices), (1,), generator=self._captions)]))
        return self.tokens.batch(torch.tensor(picks, device=self.tokens.input_ids.device))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.training or self._features is None:
            return F.cross_entropy(logits.float(), labels)
        img, labels = _gather(self._features, labels)
        self._features = None
        text = F.normalize(self.clip.get_text_features(**self._caption_tokens(labels)).pooler_output.float(), dim=-1)
        per_image = self.clip.logit_scale.exp() * img @ text.T
        target = torch.arange(len(labels), device=per_image.device)
        return (F.cross_entropy(per_image, target) + F.cross_entropy(per_image.T, target)) / 2

    def on_epoch_start(self, epoch: int) -> None:
        self._captions = None

    @torch.no_grad()
    def on_step_end(self) -> None:
        self.clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def describe(self) -> str:
        return "both CLIP encoders, projections and temperature (FLYP: CLIP's in-batch loss on class captions)"


def _gather(local: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole batch's features and labels, in one process's order, on every process.

    The engine gives process ``r`` of ``W`` the batch's images ``r, r + W, ...``; this
    interleaves the gathered shares back into that order. Only the local share carries
    gradients, scaled by ``W`` so that the gradients DDP averages over processes equal
    one process's.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, labels
    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([len(labels)], device=local.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    most = int(max(s.item() for s in sizes))
    pad = most - len(labels)
    feats = [torch.zeros(most, local.shape[1], device=local.device, dtype=local.dtype) for _ in range(world)]
    labs = [torch.zeros(most, device=labels.device, dtype=labels.dtype) for _ in range(world)]
    dist.all_gather(feats, F.pad(local.detach(), (0, 0, 0, pad)))
    dist.all_gather(labs, F.pad(labels, (0, pad)))
    feats[rank] = F.pad(local * world - local.detach() * (world - 1), (0, 0, 0, pad))  # value unchanged, grad x W
    order, out_f, out_l = [], [], []
    for r in range(world):
        for j in range(int(sizes[r].item())):
            order.append(r + j * world)
            out_f.append(feats[r][j])
            out_l.append(labs[r][j])
    perm = torch.tensor(order).argsort()
    return torch.stack(out_f)[perm], torch.stack(out_l)[perm]


def build(clip, num_classes: int, opts: Options) -> FLYP:
    return FLYP(clip, num_classes, opts)

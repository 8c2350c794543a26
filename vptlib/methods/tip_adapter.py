"""Tip-Adapter-F (Zhang et al., ECCV 2022; gaopengcuhk/Tip-Adapter ``main.py``, ``utils.py``).

Zero-shot CLIP plus a key-value cache of the training set, its keys fine-tuned:

    logits = s * f @ W.T + alpha * exp(-beta * (1 - f @ K.T)) @ V

``f`` is the unit-norm projected image feature, ``W`` the ``(C, D)`` zero-shot class
embeddings and ``s`` CLIP's temperature (100 for OpenAI's CLIP, the code's constant);
``K`` holds one key per training image, ``(N, D)``, initialised to that image's features
averaged over 10 augmented views and re-normalised (``build_cache_model``), and is the
only trained tensor (``N * D`` parameters: 480 * 512 = 245,760 on ViT-B/32 and the
study's 480 training images); ``V`` is ``(N, C)``, the one-hot labels, fixed. Training
follows ``run_tip_adapter_F``: cross-entropy, AdamW at lr 1e-3 with eps 1e-4 and torch's
default weight decay of 0.01, cosine decay over 20 epochs of batch 256, every epoch on augmented images,
with ``alpha`` and ``beta`` at their initial values (ImageNet's config: 1.17 and 1).
After training, ``beta`` and ``alpha`` are searched on validation over the code's grid
(``search_hp``: ``search_step`` values from 0.1 to ``search_scale``; ImageNet's [7, 3]
and [200, 20]), the first best kept.

Where this differs from the paper's code (the Methods page says the same): the epoch is
chosen on validation accuracy (``main.py`` keeps the epoch with the best *test*
accuracy, then reports the better of two test numbers); each epoch trains on one of the
10 cached augmented views per image, drawn per epoch: the same views whose average built
the keys, rather than a fresh crop; the augmentation is the study's (:class:`~vptlib.data.augment.Augment`), not
``RandomResizedCrop(scale=(0.5, 1))`` with flips; the class embeddings are the study's
prompt ensemble (:mod:`.text`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Classifier, TextOptions, TrainDefaults, attach_frozen_image_tower, image_embedding
from .text import zero_shot_classifier

# main.py:72 passes no weight_decay to torch.optim.AdamW, whose default is 0.01.
DEFAULTS = TrainDefaults(epochs=20, lr=1e-3, optimizer="adamw", weight_decay=0.01)
# The training settings are fixed; only alpha and beta are searched on validation (finalize).
ADAM_EPS = 1e-4  # run_tip_adapter_F: torch.optim.AdamW(adapter.parameters(), lr=cfg['lr'], eps=1e-4)
AUGMENT_VIEWS = 10  # configs/*.yaml: augment_epoch
BATCH_SIZE = 256  # main.py's train_loader_F (the profiles set the study's batch size)


def search_grid(scale: float, steps: int) -> list[float]:
    """``search_hp``'s values: ``steps`` points from 0.1 up to (not including) ``scale``."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


@dataclass
class Options(TextOptions):
    init_alpha: float = 1.17  # configs/imagenet.yaml: the residual ratio while the keys train
    init_beta: float = 1.0  # configs/imagenet.yaml: the sharpness of the affinity
    search_scale: tuple[float, float] = (7.0, 3.0)  # (beta, alpha) upper ends of the search
    search_step: tuple[int, int] = (200, 20)  # (beta, alpha) grid sizes; (0, 0): keep the initial values


class CacheHead(nn.Module):
    """The classifier on unit-norm image features: zero-shot logits plus the cache's."""

    def __init__(self, text: torch.Tensor, scale: torch.Tensor, alpha: float, beta: float):
        super().__init__()
        classes, dim = text.shape
        self.in_features = dim
        self.register_buffer("text", text)  # (C, D) zero-shot class embeddings, frozen
        self.register_buffer("scale", scale)  # CLIP's temperature, frozen
        self.keys = nn.Parameter(torch.zeros(0, dim))  # (N, D) one per training image, once fitted
        self.register_buffer("values", torch.zeros(0, classes))  # (N, C) one-hot labels
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("beta", torch.tensor(float(beta)))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        clip_logits = self.scale * f @ self.text.T  # (B, C)
        affinity = f @ self.keys.T  # (B, N)
        cache_logits = torch.exp(-self.beta * (1 - affinity)) @ self.values  # (B, C)
        return clip_logits + self.alpha * cache_logits

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # The cache has one row per training image of the run that wrote the checkpoint.
        for name in ("keys", "values"):
            if prefix + name in state_dict:
                getattr(self, name).data = getattr(self, name).new_empty(state_dict[prefix + name].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TipAdapterF(Classifier):
    trainable_patterns = ("head.keys",)  # what it trains (the contract test holds it to this)
    uses_feature_cache = True
    feature_views = AUGMENT_VIEWS
    fitted_buffers = ("head.values", "head.alpha", "head.beta")
    data_sized = ("head.keys", "head.values")

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        model = clip.model
        attach_frozen_image_tower(self, clip)
        self.text_prompts, text = zero_shot_classifier(clip, num_classes, opts)
        self.head = CacheHead(text, model.logit_scale.detach().exp().clone(), opts.init_alpha, opts.init_beta)
        self.search_scale, self.search_step = tuple(opts.search_scale), tuple(opts.search_step)

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        img = image_embedding(self, pixel_values)
        return F.normalize(img.float(), dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.head.keys], "lr": lr, "eps": ADAM_EPS}]

    @torch.no_grad()
    def fit_features(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Build the cache (``build_cache_model``): each key is its image's features averaged
        over the augmented views, re-normalised; then train (returns None)."""
        views, labels = splits["views"]  # (V, N, D) unit-norm features of each view
        # build_cache_model averages encode_image's raw features; here each view was normalised
        # first, which weighs the views equally (CLIP's features have near-equal norms).
        keys = F.normalize(views.mean(0), dim=-1)
        self.head.keys.data = keys.to(self.head.keys.dtype)
        self.head.values = F.one_hot(labels, self.head.text.shape[0]).to(self.head.text.dtype)
        return None

    def finalize(self, score: Callable[[str], tuple[float, float]]) -> dict:
        """``search_hp`` on validation: the first (beta, alpha) of best accuracy over the grid.
        Without a search (``search_step`` 0, or select="last": nothing is chosen on validation)
        the values it trained with stay, ``init_alpha`` and ``init_beta``."""
        if not all(self.search_step) or "val" not in getattr(score, "splits", ("val",)):
            return {
                "tip_alpha": float(self.head.alpha),
                "tip_beta": float(self.head.beta),
                "selected_by": "the initial alpha and beta (no search on validation)",
            }
        betas, alphas = (search_grid(s, n) for s, n in zip(self.search_scale, self.search_step, strict=True))
        best = (-1.0, float(self.head.beta), float(self.head.alpha))
        for beta in betas:
            for alpha in alphas:
                self.head.beta.fill_(beta)
                self.head.alpha.fill_(alpha)
                acc = score("val")[0]
                if acc > best[0]:  # strictly better: the first best stays, as in search_hp
                    best = (acc, beta, alpha)
        self.head.beta.fill_(best[1])
        self.head.alpha.fill_(best[2])
        return {
            "tip_alpha": best[2],
            "tip_beta": best[1],
            "tip_search_val_acc": best[0],
            "selected_by": "validation accuracy over (beta, alpha), the first best (Tip-Adapter's search_hp)",
        }

    def describe(self) -> str:
        return "the cache keys of Tip-Adapter-F (one per training image) beside zero-shot CLIP"


def build(clip, num_classes: int, opts: Options) -> TipAdapterF:
    if opts.init_alpha < 0 or opts.init_beta < 0:
        raise ValueError(f"init_alpha and init_beta must be >= 0, got {opts.init_alpha}, {opts.init_beta}")
    if len(opts.search_scale) != 2 or len(opts.search_step) != 2 or any(n < 0 for n in opts.search_step):
        raise ValueError("search_scale and search_step are (beta, alpha) pairs, steps >= 0")
    return TipAdapterF(clip, num_classes, opts)

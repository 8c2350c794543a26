"""What every method returns: a :class:`Classifier`, i.e. pixels in, class logits out.

Its parameters with ``requires_grad`` are exactly the ones its method trains; the
engine optimises those and saves only those.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def flag(default: Any, name: str, help: str, rehearsal: Any = None) -> Any:
    """An ``Options`` field that ``vptlib run`` exposes as ``name`` (the flag, help and type
    live with the method; the command line is generated from them). ``rehearsal``: the value a
    dry run (``make book DRY_RUN=1``) cuts it to, for an option that sets a run's cost beside
    its epochs (ProLIP's 300 cached views)."""
    return field(default=default, metadata={"flag": name, "help": help, "rehearsal": rehearsal})


@dataclass(frozen=True)
class TrainDefaults:
    """A method's recommended optimisation settings; ``vptlib run`` flags override them."""

    epochs: int
    lr: float
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    # Max global gradient norm, 0: no clipping, as the method's reference code does it
    # (KMnP/vpt, CLIP-LoRA and FLYP do not clip; WiSE-FT's finetune.py clips at 1.0).
    grad_clip: float = 0.0
    # How the method's paper breaks a tie of validation accuracy in its hyper-parameter
    # grid: "loss" (the study's rule: lower validation loss) or "smallest_lr".
    grid_ties: str = "loss"


@dataclass
class TextOptions:
    """The class texts of a method that reads CLIP's text tower; a method whose ``Options``
    subclass this is a text method (``MethodSpec.uses_text``). Every field defaults to the
    study's own: the four classes, :data:`~vptlib.methods.text.TEMPLATES` and
    :data:`~vptlib.methods.text.SYNONYMS`."""

    class_names: tuple[str, ...] | None = None  # defaults to the data's classes
    templates: tuple[str, ...] | None = None  # format strings with one "{}" for the class phrase
    synonyms: dict | None = None  # {class: (phrase, ...)} overriding the built-in synonyms


# The engine's hooks: the methods of :class:`Classifier` a method may override, each called
# at one point of a run. A :class:`Wrapper` forwards every one of them to the method it
# wraps. ``trainable_state`` is not a hook: its names are the module's own.
HOOKS = ("loss", "param_groups", "on_epoch_start", "on_step_end", "fit_features", "finalize", "features", "describe")
# What the engine may rely on, as attributes (a class default, or set in ``__init__`` when
# an option decides it). Tests check each against the method's behaviour.
CAPABILITIES = (
    "uses_feature_cache",
    "feature_views",
    "epoch_draws_views",
    "batch_loss_is_global",
    "unused_params_possible",
    "text_prompts",
    "peft_export",
    "fitted_buffers",
    "data_sized",
    "trainable_patterns",
    "full_batch",
)


class Classifier(nn.Module):
    """The method contract: ``forward(pixel_values) -> (B, num_classes)`` logits, the
    capabilities below, and the hooks in :data:`HOOKS` (each with a default here).

    Its parameters with ``requires_grad`` are exactly the ones its method trains. A method
    with ``uses_feature_cache`` also has ``features(pixels) -> (B, D)``, frozen, and a
    trainable ``head: nn.Module`` on them, so that ``forward(x) == head(features(x))``.
    ``tests/methods/test_contract.py`` checks every registered method against this.
    """

    head: nn.Module  # declared, not defaulted: a class attribute would shadow nn.Module's registration

    # The parameters the method trains, as fnmatch patterns of their names ("head.*"): every
    # parameter with requires_grad must match one, so a tower left unfrozen by mistake fails
    # the contract test instead of training silently.
    trainable_patterns: tuple[str, ...] = ()

    # True: the engine trains ``head`` on cached frozen ``features``.
    uses_feature_cache: bool = False
    # With the feature cache: how many augmented views of each training image are cached beside
    # its plain features (Tip-Adapter's cache averages 10, CLAP trains on 20); 0: no views, the
    # head trains on the plain features. ``fit_features`` then sees them as ``splits["views"]``.
    feature_views: int = 0
    # With views: True, an epoch draws its batches from the shuffled pool of every (image, view)
    # pair, as many as a loader over the images has (CLAP's run_epoch: len(train_loader_x),
    # Dassl dropping the last partial batch when there is a full one); False, each epoch shows
    # each image once, as one view drawn from the epoch's seed (Tip-Adapter-F re-augments).
    epoch_draws_views: bool = False
    # True: ``loss`` is the whole batch's loss on every data-parallel process (in-batch
    # contrastive losses gather the batch); False: the mean over this process's share.
    batch_loss_is_global: bool = False
    unused_params_possible: bool = False  # some trainable tensors may get no gradient in a step (DDP must know)
    text_prompts: dict[str, list[str]] | None = None  # a text method's class prompts, recorded in config.json
    # A LoRA method's adapters (vision_lora.PeftExport): saved beside the checkpoint in
    # PEFT's format, so `PeftModel.from_pretrained` loads them (runs.record_writer.save_adapter).
    peft_export: Any = None
    # Buffers fitted from the data, not by the optimiser (Tip-Adapter-F's cache values, its
    # alpha and beta chosen on validation): a checkpoint holds them beside the trained tensors.
    fitted_buffers: tuple[str, ...] = ()
    # Checkpoint tensors whose first dimension the run's data decides (one cache key per
    # training image): a reloaded run takes their shape from the checkpoint.
    data_sized: tuple[str, ...] = ()
    # True: every optimiser step sees the whole training split, one step an epoch (ProLIP's
    # full-batch epochs); the run's batch size then sizes only feature extraction and evaluation.
    full_batch: bool = False

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups; methods with per-part learning rates override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def on_epoch_start(self, epoch: int) -> None:
        """Hook for schedules that change what trains (LP-FT)."""

    def on_step_end(self) -> None:
        """Hook after each optimizer step (FLYP clips its temperature here)."""

    def fit_features(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict | None:
        """Hook for methods fitted in closed form on cached features (the L-BFGS linear probe).

        ``splits`` maps train/val/test to (features, labels), and "views", with
        ``feature_views``, to the ``(V, N, D)`` augmented views of the training features and
        their labels. Returns what to record in the metrics once fitted (the engine then
        trains no epochs), or None to train; a method may fit state from the data here and
        still train (Tip-Adapter-F's cache, CLAP's multipliers).
        """
        return None

    def finalize(self, score: Callable[[str], tuple[float, float]]) -> dict:
        """Hook after the epoch is selected, for choices made on validation (WiSE-FT's alpha).

        ``score(split)`` returns (accuracy, loss) of the model as it stands on that split;
        ``score.splits`` names the splits it may score (test only when the run may look
        at it; asking for another is an error). Returns what to record in the run's metrics.
        """
        return {}

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen ``(B, D)`` features ``head`` reads; only for ``uses_feature_cache``."""
        raise NotImplementedError(f"{type(self).__name__} trains on pixels, not on cached features")

    def describe(self) -> str:
        """One line for reports: what this method trains."""
        return ""

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every tensor this method trains, and its ``fitted_buffers``, by name: what a checkpoint holds."""
        state = {n: p for n, p in self.named_parameters() if p.requires_grad}
        buffers = dict(self.named_buffers())
        return {**state, **{n: buffers[n] for n in self.fitted_buffers}}


class Wrapper(Classifier):
    """A method built around another (WiSE-FT around fine-tuning): ``forward``, every hook in
    :data:`HOOKS` and every capability in :data:`CAPABILITIES` go to ``inner`` unless the
    wrapper defines its own. Each is written out, so grep and a debugger find it; a hook or
    capability added to the contract needs its line here, and
    ``tests/methods/test_contract.py`` fails until it has one."""

    def __init__(self, inner: Classifier):
        super().__init__()
        self.inner = inner

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.inner(pixel_values)

    # -- the hooks
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.inner.loss(logits, labels)

    def param_groups(self, lr: float) -> list[dict]:
        return self.inner.param_groups(lr)

    def on_epoch_start(self, epoch: int) -> None:
        return self.inner.on_epoch_start(epoch)

    def on_step_end(self) -> None:
        return self.inner.on_step_end()

    def fit_features(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict | None:
        return self.inner.fit_features(splits)

    def finalize(self, score: Callable[[str], tuple[float, float]]) -> dict:
        return self.inner.finalize(score)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.inner.features(pixel_values)

    def describe(self) -> str:
        return self.inner.describe()

    # -- the capabilities
    @property
    def uses_feature_cache(self) -> bool:  # type: ignore[override]
        return self.inner.uses_feature_cache

    @property
    def feature_views(self) -> int:  # type: ignore[override]
        return self.inner.feature_views

    @property
    def epoch_draws_views(self) -> bool:  # type: ignore[override]
        return self.inner.epoch_draws_views

    @property
    def batch_loss_is_global(self) -> bool:  # type: ignore[override]
        return self.inner.batch_loss_is_global

    @property
    def unused_params_possible(self) -> bool:  # type: ignore[override]
        return self.inner.unused_params_possible

    @property
    def text_prompts(self) -> dict[str, list[str]] | None:  # type: ignore[override]
        return self.inner.text_prompts

    @property
    def peft_export(self) -> Any:  # type: ignore[override]
        return self.inner.peft_export

    @property
    def fitted_buffers(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.inner.fitted_buffers

    @property
    def data_sized(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.inner.data_sized

    @property
    def full_batch(self) -> bool:  # type: ignore[override]
        return self.inner.full_batch

    @property
    def trainable_patterns(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"inner.{p}" for p in self.inner.trainable_patterns)  # the inner module's names, seen from here


def linear_head(in_features: int, num_classes: int) -> nn.Linear:
    """The classification head on a D-dimensional feature, starting at zero.

    Every logit is 0, so the first loss is exactly log C and training moves the head
    from a neutral start. VPT's code draws it Kaiming-normal (fan-out), whose weight std
    is sqrt(2 / C) = 0.71 for 4 classes: at the AdamW learning rates of the linear probe
    and LoRA (1e-4 to 1e-3) the head then barely moves in a whole run and stays near a
    random classifier (measured on the tiny model: linear-probe test accuracy 0.10 to
    0.49 over three seeds, against 0.68 for every seed from zero).
    """
    head = nn.Linear(in_features, num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def attach_frozen_image_tower(module: nn.Module, clip) -> None:
    """Give ``module`` frozen copies of CLIP's vision tower and image projection, as
    ``module.vision`` and ``module.visual_projection`` (the methods on CLIP's own image
    embedding: zero-shot, CLAP, Tip-Adapter-F); the caller's model is left as it was."""
    module.vision = copy.deepcopy(clip.model.vision_model).requires_grad_(False)
    module.visual_projection = copy.deepcopy(clip.model.visual_projection).requires_grad_(False)


def image_embedding(module: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """``(B, E)``: CLIP's image embedding through ``module``'s tower, before normalisation."""
    return module.visual_projection(module.vision(pixel_values=pixel_values).pooler_output)


def vision_model(clip) -> nn.Module:
    """The vision tower of a :class:`~vptlib.models.backbone.Clip` bundle or of a bare ``CLIPModel``."""
    return clip.vision_model if hasattr(clip, "vision_model") else clip.model.vision_model


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total

"""Linear probe: a frozen CLIP image encoder and one ``Linear(D, C)`` on its post-LN CLS
feature (``pooler_output``).

The default follows CLIP's linear-probe protocol (Radford et al. 2021): L2-regularised
logistic regression fitted by L-BFGS (scikit-learn) on the cached frozen features, with
the regularisation strength ``C`` chosen on the validation split over CLIP's 96
log-spaced values (ties: lower validation loss, then stronger regularisation), then
written into the head. CLIP then refits on train + validation; here that is the
``refit`` option, off by default (see ``Options.refit``). It is deterministic and
needs no learning rate or epochs, so it runs once whatever the seeds (``uses_seed``).
``solver="sgd"`` keeps the alternative of training the head with the engine's optimiser for ``epochs``, and
``through_backbone=True`` (with SGD) runs the frozen backbone on augmented images every
step instead of the cache.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from vptlib.selection import best_index

from .base import Classifier, TrainDefaults, flag, linear_head, vision_model

DEFAULTS = TrainDefaults(epochs=50, lr=1e-3, optimizer="adamw", weight_decay=1e-4)  # for solver="sgd"
# Inverse L2 strength: CLIP's sweep, 96 log-spaced values from 1e-6 to 1e6 (Radford et al.
# 2021, appendix A.3), every one fitted and scored on validation.
C_GRID = tuple(float(c) for c in np.logspace(-6, 6, 96))
FIXED_C = 1.0  # Options.fixed_c's default: scikit-learn's LogisticRegression default


@dataclass
class Options:
    solver: str = flag(
        "lbfgs",
        "--solver",
        "linear: lbfgs (CLIP's protocol: logistic regression on cached "
        "features, C chosen on validation; default) | sgd (the head trains for --epochs)",
    )
    through_backbone: bool = flag(
        False, "--through-backbone", "linear, sgd only: train on augmented images through the frozen backbone"
    )
    # CLIP refits the chosen C on train + validation; by default this study does not. Every
    # other method trains on the training split alone and keeps validation for selection, so
    # a refit gives the probe a quarter more training images than the methods it is compared
    # with, and its validation scores are then scored on images it was fitted on.
    refit: bool = flag(
        False, "--refit", "linear, lbfgs only: refit the chosen C on train + validation, as CLIP does (default off)"
    )
    # The C of a run that chooses nothing on validation (--select last, the validation-free
    # protocol): scikit-learn's default. CLIP's protocol has no fixed C; this is the study's.
    fixed_c: float = flag(
        FIXED_C,
        "--fixed-c",
        f"linear, lbfgs: C when nothing is chosen on validation (--select last; default {FIXED_C:g})",
    )


def uses_seed(opts: Options) -> bool:
    """CLIP's protocol is deterministic (L-BFGS on unaugmented cached features, no sampling):
    every seed would give the same fit, so it runs once, as zero-shot does. The SGD head draws
    its order, initial weights and augmentation from the seed."""
    return opts.solver != "lbfgs"


class LinearProbe(Classifier):
    trainable_patterns = ("head.*",)  # what it trains (the contract test holds it to this)

    def __init__(self, vision, num_classes: int, opts: Options):
        super().__init__()
        self.vision = copy.deepcopy(vision).requires_grad_(False)
        self.head = linear_head(self.vision.config.hidden_size, num_classes)
        self.solver = opts.solver
        self.refit = opts.refit
        self.fixed_c = opts.fixed_c
        self.uses_feature_cache = not opts.through_backbone

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values=pixel_values).pooler_output

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values).float())

    @torch.no_grad()
    def fit_features(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict | None:
        """CLIP's protocol on the cached features; None for ``solver="sgd"`` (the engine trains)."""
        if self.solver != "lbfgs":
            return None
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
            x, y = splits[split]
            return x.float().cpu().numpy().astype(np.float64), y.cpu().numpy()

        # No validation split given (select="last"): the fixed C, nothing chosen, nothing refitted.
        (xt, yt), (xv, yv) = arrays("train"), arrays("val") if "val" in splits else (None, np.zeros(0))
        classes = np.arange(self.head.out_features)

        def fit(c: float) -> LogisticRegression:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # weak regularisation on separable features stops at max_iter
                return LogisticRegression(C=c, max_iter=1000).fit(xt, yt)

        curve = []
        for c in C_GRID if len(yv) else ():
            p = _proba(fit(c), xv, classes)
            curve.append(
                {
                    "C": c,
                    "val_acc": float((p.argmax(1) == yv).mean()),
                    "val_loss": float(log_loss(yv, p, labels=classes)),
                }
            )
        # Ties: the smaller C, the stronger regularisation.
        best = curve[best_index(curve, tiebreak=lambda r: r["C"])]["C"] if curve else self.fixed_c
        if self.refit and len(yv):
            xt, yt = np.concatenate([xt, xv]), np.concatenate([yt, yv])
        clf = fit(best)
        w = np.zeros((len(classes), xt.shape[1]))
        b = np.full(len(classes), -1e4)  # a class absent from training is never predicted
        if len(clf.classes_) == 2:  # scikit-learn keeps one row for two classes
            w[clf.classes_[1]], b[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
            w[clf.classes_[0]], b[clf.classes_[0]] = 0.0, 0.0
        else:
            w[clf.classes_], b[clf.classes_] = clf.coef_, clf.intercept_
        self.head.weight.copy_(torch.as_tensor(w, dtype=self.head.weight.dtype))
        self.head.bias.copy_(torch.as_tensor(b, dtype=self.head.bias.dtype))
        return {
            "linear_probe_C": best,
            "linear_probe_curve": curve,
            "selected_by": "validation accuracy over C (ties: lower validation loss, then smaller C)"
            if curve
            else "fixed C (nothing chosen on validation)",
            "linear_probe_refit_on_val": bool(self.refit and len(yv)),
        }

    def describe(self) -> str:
        how = "L2 logistic regression (L-BFGS, C chosen on validation)" if self.solver == "lbfgs" else "an SGD head"
        return f"a linear head on the frozen post-LN CLS feature: {how}"


def _proba(clf, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Probabilities over every class, also those absent from training (probability 0)."""
    out = np.zeros((len(x), len(classes)))
    out[:, clf.classes_] = clf.predict_proba(x)
    return np.clip(out, 1e-12, 1.0)


def build(clip, num_classes: int, opts: Options) -> LinearProbe:
    if opts.solver not in ("lbfgs", "sgd"):
        raise ValueError(f"solver must be lbfgs or sgd, got {opts.solver!r}")
    if opts.refit and opts.solver != "lbfgs":
        raise ValueError("refit applies to the L-BFGS fit: pass solver='lbfgs' (the default)")
    if not opts.fixed_c > 0:
        raise ValueError(f"fixed_c must be a positive number, got {opts.fixed_c}")
    if opts.through_backbone and opts.solver != "sgd":
        raise ValueError("through_backbone trains by SGD: pass solver='sgd' too")
    return LinearProbe(vision_model(clip), num_classes, opts)

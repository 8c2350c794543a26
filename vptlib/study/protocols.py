"""The protocols a study's runs may follow, and the keys of the studies a profile runs beside
its main one (:meth:`vptlib.study.profile.Profile.variant`): shared by the profile and its
schema."""

from __future__ import annotations

# How a profile's runs choose their settings and epochs (Profile.protocol), as the pages state
# it, and the RunConfig.select each implies.
PROTOCOLS = {
    "validated": "settings tuned on validation over the profile's grids, the epoch selected on validation",
    "fixed": "no choice on validation: one fixed setting per method (its hparams) for every K, no grid, "
    "the last epoch, the study's epochs, and the validation images left unused (what choosing on "
    "validation buys at this study's budget; not CLIP-LoRA's or CLAP's protocol, which train on every "
    "labelled image for their own budgets)",
}
SELECT = {"validated": "val", "fixed": "last"}
VARIANT_KINDS = ("backbone", "protocol")  # Profile.variant: the keys backbones: and protocols:
BACKBONE_KEYS = ("model", "revision", "methods", "hparams", "reference")
PROTOCOL_KEYS = ("methods", "hparams")

__all__ = ["BACKBONE_KEYS", "PROTOCOLS", "PROTOCOL_KEYS", "SELECT", "VARIANT_KINDS"]

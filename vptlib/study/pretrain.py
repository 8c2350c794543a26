"""Warm up the tiny CLIP on phantoms, so the offline smoke profile adapts a *pretrained* model.

A random-weight transformer's features carry almost no information about the
phantoms (a logistic probe on them scores at chance, measured while building this),
so linear probing and prompt tuning on a random tiny model could not be told apart
from chance. This runs the study's own ``full`` method (supervised, the vision tower
and a head) on a separate phantom set (its own seed, so no image is shared with the
smoke data) and saves the vision tower into a CLIP folder; the head is discarded.
The text tower stays random, so zero-shot results on this model mean nothing. It is
deterministic for a seed, and it is no stand-in for CLIP's real pretraining.
(Contrastive pretraining with a random text tower was tried and learned slower.)
"""

from __future__ import annotations

from pathlib import Path

from vptlib import atomic
from vptlib.data.phantoms import write_phantoms
from vptlib.data.prepare import PrepareOptions, prepare
from vptlib.models.backbone import load_clip
from vptlib.models.offline import save_clip, write_tiny_clip

PRETRAIN_SEED_OFFSET = 1000  # phantom seeds used here never collide with the data's


def pretrain_tiny(
    out: str | Path, epochs: int = 20, per_class: int = 200, seed: int = 0, lr: float = 2e-3, progress: bool = True
) -> Path:
    """Write a tiny CLIP to ``out`` whose vision tower trained ``epochs`` epochs on separate phantoms."""
    from vptlib.runs.engine import RunConfig, run

    out = Path(out)
    with atomic.scratch_dir(out) as tmp:  # beside out: a killed build's leftovers go with the next one
        write_tiny_clip(tmp / "random", seed=seed)
        write_phantoms(tmp / "phantoms", per_class=per_class, size=128, seed=PRETRAIN_SEED_OFFSET + seed)
        prepare(
            PrepareOptions(
                tmp / "phantoms",
                tmp / "data",
                train_per_class=per_class,
                test_per_class=min(20, per_class),
                val_fraction=0.1,
                seed=seed,
                # Synthetic slices of one generator: at 200 a class some pairs reach the copy rule's
                # cosine without being copies; the warm-up wants every one, drawn as before.
                keep_duplicates=True,
            )
        )
        cfg = RunConfig(
            method="full",
            options={"backbone_lr_scale": 1.0},
            data=str(tmp / "data"),
            model=str(tmp / "random"),
            epochs=epochs,
            batch_size=32,
            lr=lr,
            weight_decay=0.05,
            warmup=2,
            grad_clip=0.0,
            seed=seed,
            augment=False,
            device="cpu",
            test_curves=False,
            out=str(tmp / "runs"),
            profile="pretrain",
            precision="fp32",
        )  # the same model on every CPU, bf16-capable or not
        result = run(cfg, progress=progress, keep_model=True)
        clip = load_clip(tmp / "random").model
        clip.vision_model.load_state_dict(result.model.vision.state_dict())
        note = (
            f"Tiny CLIP, random init (seed {seed}); vision tower then trained for {epochs} epochs with vptlib's full on "
            f"{per_class} phantoms per class (phantom seed {PRETRAIN_SEED_OFFSET + seed}), in fp32.\n"
            f"Validation accuracy after pretraining: {result.metrics['val']['accuracy']:.3f}.\n"
        )
        save_clip(clip.eval(), out, notes={"PRETRAINING.md": note})
    return out

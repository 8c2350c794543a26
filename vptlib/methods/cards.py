"""Recipe cards: what each method named after a paper does in that paper's code, line by line,
and what this study runs instead where it departs, with the reason.

A card is data, read three ways: ``tests/methods/test_cards.py`` trains each carded method
briefly and compares the realised run (batch, epochs, optimiser, starting lr, weight decay,
warm-up, optimiser steps per epoch and the lr at each epoch's end) with the card's study
column resolved from the full profile; the Methods page's recipe table is generated from the
cards (:func:`recipe_table`); and a reader can follow each source to the line it cites.
Sources name ``owner/repo`` at the commit read (:data:`COMMITS`), then ``file:line``.

The study column holds the full profile's settings: for a method with a grid, the starting
point the grid spans (the Discussion says how the grids were sized).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

# The commits the cards were read at.
COMMITS = {
    "KaiyangZhou/CoOp": "ff61507c790454bce7c5052c3ac39e60772f1f89",
    "KaiyangZhou/Dassl.pytorch": "c61a1b570ac6333bd50fb5ae06aea59002fb20bb",  # CoOp's and CLAP's trainer
    "jusiro/CLAP": "dbdf4095b3d824546474c725539b9f4efff3ca0e",
    "gaopengcuhk/Tip-Adapter": "d0e2d6f8c5feb8b6ce937b757810761f7155d4d5",
    "KMnP/vpt": "4410440ec1b489f24f66b9fad3d9b10ff3443567",
    "MaxZanella/CLIP-LoRA": "358f0d7361f59e66c0b2d0b672a3dafb143a759b",
    "mlfoundations/wise-ft": "58b7a4b343b09dc06606aa929c2ef51accced8d1",
    "locuslab/FLYP": "215d5bb6feeda6675f60e5818abcb4f6465c83af",
    "astra-vision/ProLIP": "b43e795cbf0b53a9b0aa83cf4f47d9755896ba6f",
    "HealthX-Lab/CLIP-SVD": "022b1eda02df7a5a1311d0868d49874d69b0010e",
    "mrflogs/ICLR24": "560fe211700964c915442ff98dbe47dd09656a35",
}
STUDY_SCHEDULE = "linear warm-up, then cosine to 0, per step"
SAME = object()  # the study runs the paper's value


@dataclass(frozen=True)
class Item:
    """One setting: the paper's code's value and where it is, and the study's where it differs."""

    paper: object
    source: str
    study: object = SAME
    why: str = ""

    @property
    def ours(self) -> object:
        return self.paper if self.study is SAME else self.study

    @property
    def departs(self) -> bool:
        return self.study is not SAME and self.study != self.paper


@dataclass(frozen=True)
class Card:
    """A method's recipe; ``epoch`` is how many optimiser steps an epoch takes: ``"pass"``, one
    pass over the N training images (ceil(N / batch)); ``"loader"``, Dassl's
    ``len(train_loader_x)``, which drops a last partial batch when there is a full one;
    ``"full"``, one step on all N images (a full-batch method: ``batch`` is then N)."""

    paper: str  # the citation key (book/references.bib)
    batch: Item
    epochs: Item
    optimizer: Item
    lr: Item
    weight_decay: Item
    warmup: Item  # epochs
    schedule: Item
    init: Item
    augmentation: Item
    selection: Item
    epoch: str = "pass"

    def steps_per_epoch(self, n: int) -> int:
        if self.epoch == "full":
            return 1
        b = int(self.batch.ours)
        if self.epoch == "loader":
            return n // b if n >= b else 1
        return max(1, math.ceil(n / b))

    def items(self) -> list[tuple[str, Item]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if isinstance(getattr(self, f.name), Item)]


def lr_at(step: int, lr: float, warm_steps: int, total_steps: int) -> float:
    """The study's schedule (:func:`vptlib.runs.training.make_scheduler`) after ``step`` steps."""
    if step < warm_steps:
        return lr * (step + 1) / warm_steps
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm_steps) / max(1, total_steps - warm_steps)))


_STUDY_AUG = "the study's augmentation (random resized crop and flip; vptlib.data.augment)"
_EPOCH_BY_VAL = "the epoch: best validation accuracy"
_WARM_CONST = "constant lr 1e-5 for the warm-up epoch"
_BUDGET = "the study's budget (CPU smoke builds, GPU full builds); validation picks the epoch"

COOP = Card(
    paper="zhou2022coop",
    batch=Item(32, "CoOp configs/trainers/CoOp/vit_b32.yaml:3"),
    epochs=Item(200, "CoOp configs/trainers/CoOp/vit_b32.yaml:18"),
    optimizer=Item("sgd", "CoOp configs/trainers/CoOp/vit_b32.yaml:16 (momentum 0.9: Dassl defaults.py:154)"),
    lr=Item(0.002, "CoOp configs/trainers/CoOp/vit_b32.yaml:17"),
    weight_decay=Item(0.0005, "Dassl dassl/config/defaults.py:153"),
    warmup=Item(1, "CoOp configs/trainers/CoOp/vit_b32.yaml:20-22 (constant, 1e-5)"),
    schedule=Item(
        "cosine per epoch after a constant warm-up",
        "CoOp configs/trainers/CoOp/vit_b32.yaml:19-22",
        STUDY_SCHEDULE,
        "one schedule for every method; the warm-up ramps to the lr instead of holding 1e-5",
    ),
    init=Item("context vectors from N(0, 0.02^2)", "CoOp trainers/coop.py:90"),
    augmentation=Item(
        "random resized crop (0.08-1), flip", "CoOp configs/trainers/CoOp/vit_b32.yaml:13", _STUDY_AUG, "one for all"
    ),
    selection=Item(
        "the last epoch", "Dassl dassl/config/defaults.py:216", _EPOCH_BY_VAL, "the study's protocol for every method"
    ),
)

CLAP = Card(
    paper="silva2024clap",
    batch=Item(256, "CLAP configs/trainers/SGD_lr1e-1_B256_ep300.yaml:3"),
    epochs=Item(300, "CLAP configs/trainers/SGD_lr1e-1_B256_ep300.yaml:18"),
    optimizer=Item("sgd", "CLAP configs/trainers/SGD_lr1e-1_B256_ep300.yaml:16"),
    lr=Item(0.1, "CLAP configs/trainers/SGD_lr1e-1_B256_ep300.yaml:17"),
    weight_decay=Item(0.0, "CLAP configs/trainers/SGD_lr1e-1_B256_ep300.yaml:23"),
    warmup=Item(
        1,
        "CLAP configs/trainers/SGD_lr1e-1_B256_ep300.yaml:20-22 (constant, 1e-5)",
        0,
        "an epoch at 1e-5 moves nothing",
    ),
    schedule=Item(
        "cosine per epoch", "CLAP configs/trainers/SGD_lr1e-1_B256_ep300.yaml:19", STUDY_SCHEDULE, "one schedule"
    ),
    init=Item("prototypes = the raw mean zero-shot text embedding", "CLAP trainers/adapters.py:127,150"),
    augmentation=Item(
        "20 cached augmented views per image (random resized crop, flip)",
        "CLAP trainers/adapters.py:143,538",
        "20 cached views of the study's augmentation (vptlib.data.augment)",
        "one augmentation for every method",
    ),
    selection=Item(
        "the last epoch", "Dassl dassl/config/defaults.py:216", _EPOCH_BY_VAL, "the study's protocol for every method"
    ),
    epoch="loader",
)

TIP_ADAPTER_F = Card(
    paper="zhang2022tipadapter",
    batch=Item(256, "Tip-Adapter main.py:181"),
    epochs=Item(20, "Tip-Adapter configs/imagenet.yaml:31"),
    optimizer=Item("adamw", "Tip-Adapter main.py:72 (eps 1e-4)"),
    lr=Item(0.001, "Tip-Adapter configs/imagenet.yaml:29"),
    weight_decay=Item(0.01, "Tip-Adapter main.py:72 (none given: torch.optim.AdamW's default)"),
    warmup=Item(0, "Tip-Adapter main.py:73"),
    schedule=Item("cosine per step", "Tip-Adapter main.py:73", STUDY_SCHEDULE, "the same with no warm-up"),
    init=Item("keys = the mean of 10 augmented views' features, normalised", "Tip-Adapter utils.py:46,60"),
    augmentation=Item(
        "a fresh random resized crop (0.5-1) and flip every epoch",
        "Tip-Adapter main.py:173-174",
        "one of the 10 cached views that built the keys, drawn per epoch",
        "the views are computed once",
    ),
    selection=Item(
        "the epoch with the best test accuracy; alpha, beta searched",
        "Tip-Adapter main.py:122,132",
        "the epoch and alpha, beta on validation",
        "nothing is chosen on test",
    ),
)


def _vpt() -> Card:
    """VPT-shallow's and VPT-deep's recipe (the code trains both the same way)."""
    return Card(
        paper="jia2022vpt",
        batch=Item(128, "vpt configs/base-prompt.yaml:25", 32, "the study's batch for every prompt method"),
        epochs=Item(100, "vpt configs/base-prompt.yaml:19", 50, _BUDGET),
        optimizer=Item("sgd", "vpt configs/base-prompt.yaml:14 (momentum 0.9: :15)"),
        lr=Item(
            "grid: base lr {0.05 ... 50} x batch / 256",
            "vpt tune_vtab.py:100,245-251",
            0.05,
            "the grid is the same; 0.05 is where a run without the grid starts",
        ),
        weight_decay=Item("grid {0, 1e-4, 1e-3, 1e-2}", "vpt tune_vtab.py:251", 0.0001, "the grid is the same"),
        warmup=Item(10, "vpt configs/base-prompt.yaml:18", 5, "a tenth of the epochs, as there"),
        schedule=Item("linear warm-up, then cosine, per step", "vpt src/solver/lr_scheduler.py:41"),
        init=Item("prompts ~ U(-v, v), Xavier's bound", "vpt src/models/vit_prompt/vit.py:61-62"),
        augmentation=Item(
            "resize and crop only", "vpt src/data/transforms.py:23-36", _STUDY_AUG, "one for all; 96 images a class"
        ),
        selection=Item(
            "lr and wd on validation (ties: smaller lr)",
            "vpt tune_vtab.py:215-251",
            "lr and wd on validation (ties: smaller lr); the epoch too",
            "the study's protocol",
        ),
    )


VPT_SHALLOW = VPT_DEEP = _vpt()

CLIP_LORA = Card(
    paper="zanella2024cliplora",
    batch=Item(32, "CLIP-LoRA run_utils.py:30"),
    epochs=Item(
        "500 x shots iterations",
        "CLIP-LoRA lora.py:73; run_utils.py:29",
        20,
        "48,000 iterations at 96 shots; here the study's epochs, the epoch chosen on validation",
    ),
    optimizer=Item("adamw", "CLIP-LoRA lora.py:75"),
    lr=Item(0.0002, "CLIP-LoRA run_utils.py:28"),
    weight_decay=Item(0.01, "CLIP-LoRA lora.py:75"),
    warmup=Item(0, "CLIP-LoRA lora.py:76", 2, "one schedule for every method"),
    schedule=Item("cosine to 1e-6, per iteration", "CLIP-LoRA lora.py:76", STUDY_SCHEDULE, "one schedule"),
    init=Item("LoRA rank 2, alpha 1, dropout 0.25 on q, k, v", "CLIP-LoRA run_utils.py:32-37"),
    augmentation=Item("random resized crop (0.08-1), flip", "CLIP-LoRA main.py:39-40", _STUDY_AUG, "one for all"),
    selection=Item("the last iteration", "CLIP-LoRA lora.py:85-126", _EPOCH_BY_VAL, "the study's protocol"),
)

WISE_FT = Card(
    paper="wortsman2022wiseft",
    batch=Item(512, "wise-ft README.md:84", 32, "the study's batch"),
    epochs=Item(10, "wise-ft README.md:82"),
    optimizer=Item("adamw", "wise-ft src/models/finetune.py:62"),
    lr=Item(0.00003, "wise-ft README.md:83", 0.00001, "the grid spans it"),
    weight_decay=Item(0.1, "wise-ft src/args.py:84"),
    warmup=Item("500 steps", "wise-ft src/args.py:94-96", 1, "a tenth of the epochs"),
    schedule=Item("cosine after linear warm-up, per step", "wise-ft src/models/finetune.py:64"),
    init=Item("zero-shot head from class prompts", "wise-ft src/models/zeroshot.py:18,69"),
    augmentation=Item("CLIP's preprocessing only", "wise-ft src/models/finetune.py:37", _STUDY_AUG, "one for all"),
    selection=Item(
        "alpha reported over a sweep (0.5 the fixed row)",
        "wise-ft src/args.py:40-41",
        "the epoch and alpha on validation",
        "nothing is chosen on test",
    ),
)

FLYP = Card(
    paper="goyal2023flyp",
    batch=Item(256, "FLYP README.md:96", 32, "the study's batch"),
    epochs=Item(100, "FLYP README.md:96", 20, _BUDGET),
    optimizer=Item("adamw", "FLYP src/models/flyp_loss.py:69"),
    lr=Item(0.00001, "FLYP README.md:96"),
    weight_decay=Item(0.0, "FLYP README.md:96", 0.1, "the grid spans 0 to 0.1"),
    warmup=Item("500 steps", "FLYP README.md:96", 2, "a tenth of the epochs"),
    schedule=Item("cosine after linear warm-up, per step", "FLYP src/models/flyp_loss.py:71"),
    init=Item("CLIP's weights, contrastive loss on class captions", "FLYP src/models/flyp_loss.py:59"),
    augmentation=Item("CLIP's preprocessing only", "FLYP src/models/flyp_loss.py:27", _STUDY_AUG, "one for all"),
    selection=Item(
        "each epoch evaluated; the best on the validation set",
        "FLYP src/models/flyp_loss.py:120-126",
        _EPOCH_BY_VAL,
        "the same rule, ties to the lower validation loss",
    ),
)

PROLIP = Card(
    paper="fahes2025prolip",
    batch=Item("N (full batch)", "ProLIP methods/ProLIP.py:185-188"),
    epochs=Item(300, "ProLIP configs/experiments/few_shot_no_val_lr1e-5_lambda_1_N.yaml:11"),
    optimizer=Item("adam", "ProLIP methods/ProLIP.py:165 (eps 1e-4)", "adamw", "AdamW at weight decay 0 is Adam"),
    lr=Item(0.00001, "ProLIP configs/experiments/few_shot_no_val_lr1e-5_lambda_1_N.yaml:16"),
    weight_decay=Item(0.0, "ProLIP methods/ProLIP.py:165 (none given: Adam's 0)"),
    warmup=Item(0, "ProLIP methods/ProLIP.py:166"),
    schedule=Item("cosine per epoch (one step an epoch)", "ProLIP methods/ProLIP.py:166,216"),
    init=Item(
        "W = CLIP's visual projection; loss CE + (1/N) ||W - W0||^2", "ProLIP methods/ProLIP.py:88,140-141,201-205"
    ),
    augmentation=Item(
        "300 views (random resized crop 0.5-1, flip), view k at epoch k",
        "ProLIP main.py:72-77; methods/ProLIP.py:181-185",
        "300 cached views of the study's augmentation, one drawn per image each epoch",
        "one augmentation for every method",
    ),
    selection=Item(
        "the last epoch", "ProLIP methods/ProLIP.py:231-252", _EPOCH_BY_VAL, "the study's protocol for every method"
    ),
    epoch="full",
)

CLIP_SVD = Card(
    paper="koleilat2025clipsvd",
    batch=Item(32, "CLIP-SVD configs/few_shot/btmri.yaml:4"),
    epochs=Item(100, "CLIP-SVD configs/few_shot/btmri.yaml:3 (train.py:220: BTMRI's BiomedCLIP path counts epochs)"),
    optimizer=Item("adamw", "CLIP-SVD train.py:222-225 (betas 0.9, 0.999)"),
    lr=Item(0.007, "CLIP-SVD configs/few_shot/btmri.yaml:2"),
    weight_decay=Item(0.0, "CLIP-SVD configs/few_shot/btmri.yaml:5"),
    warmup=Item(0, "CLIP-SVD train.py:226-228"),
    schedule=Item(
        "CosineAnnealingLR(T_max = epochs, eta_min 1e-6) stepped every batch",
        "CLIP-SVD train.py:226-228,259",
        STUDY_SCHEDULE,
        "a T_max in epochs stepped per batch cycles the lr up and down through the run (a bug); here one cosine",
    ),
    init=Item(
        "every q, k, v, out, fc1, fc2 weight of both encoders = U diag(s) V^T; s trains",
        "CLIP-SVD svf_utils/svf_torch.py:27-36; svf_utils/utils.py:24-69",
    ),
    augmentation=Item("random resized crop (0.08-1), flip", "CLIP-SVD main.py:82-86", _STUDY_AUG, "one for all"),
    selection=Item("the last epoch", "CLIP-SVD train.py:273", _EPOCH_BY_VAL, "the study's protocol for every method"),
)


@dataclass(frozen=True)
class FitCard:
    """The recipe of a method fitted in closed form (nothing is optimised): what it estimates
    from which features, and what it chooses on validation."""

    paper: str
    features: Item
    estimate: Item
    logits: Item
    choice: Item
    augmentation: Item

    def items(self) -> list[tuple[str, Item]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if isinstance(getattr(self, f.name), Item)]


GDA = FitCard(
    paper="wang2024gda",
    features=Item(
        "unit-norm image features of 10 augmented views per image",
        "ICLR24 main_few_shots.py:45-51; configs/architecture/vitb32/eurosat.yaml:10",
    ),
    estimate=Item(
        "class means; precision D * pinv(scatter + tr(cov) I); uniform prior",
        "ICLR24 main_few_shots.py:56-64",
    ),
    logits=Item("100 f T^T + alpha (f W + b)", "ICLR24 main_few_shots.py:71"),
    choice=Item("alpha in {1e-4 ... 100} on validation accuracy, the first best", "ICLR24 main_few_shots.py:68-79"),
    augmentation=Item(
        "random resized crop (0.5-1), flip, drawn per seed",
        "ICLR24 main_few_shots.py:24-29",
        "10 cached views of the study's augmentation, the same for every seed",
        "one augmentation for every method; GDA then runs once",
    ),
)

# Closed-form methods named after a paper: their cards have no training settings.
FIT_CARDS: dict[str, FitCard] = {"gda": GDA}

CARDS: dict[str, Card] = {
    "coop": COOP,
    "clap": CLAP,
    "tip_adapter_f": TIP_ADAPTER_F,
    "vpt_shallow": VPT_SHALLOW,
    "vpt_deep": VPT_DEEP,
    "clip_lora": CLIP_LORA,
    "prolip": PROLIP,
    "clip_svd": CLIP_SVD,
    "wise_ft": WISE_FT,
    "flyp": FLYP,
}


def _fmt(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _breakable(source: str) -> str:
    """A source path with a break opportunity after each "/" and "_" (``<wbr>``): a table cell may
    wrap a long path between its folders and name parts, never inside a word or a number."""
    return source.replace("/", "/<wbr>").replace("_", "_<wbr>")


def recipe_table(titles: dict[str, str]) -> str:
    """Markdown: per carded method, every setting where the study departs from the paper's
    code, with the paper's value and its source, the study's value and why; one table per
    card, four columns, so each fits the article column."""
    names: dict[int, list[str]] = {}  # one card shared by several methods (VPT-shallow, -deep): one table
    for method, card in CARDS.items():
        names.setdefault(id(card), []).append(titles.get(method, method))
    for method, card in FIT_CARDS.items():
        names.setdefault(id(card), []).append(titles.get(method, method))
    blocks = []
    for card in {id(c): c for c in [*CARDS.values(), *FIT_CARDS.values()]}.values():
        rows = [
            f"| {name.replace('_', ' ')} | {_fmt(item.paper)} ({_breakable(item.source)}) | "
            f"{_fmt(item.study)} | {item.why} |"
            for name, item in card.items()
            if item.departs
        ]
        if rows:
            head = ["| setting | paper's code (source) | this study | why |", "|---|---|---|---|"]
            blocks.append("\n".join([f"**{', '.join(names[id(card)])}**", "", *head, *rows]))
    return "\n\n".join(blocks)

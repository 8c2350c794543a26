"""Class prompts for the text-side methods: templates x class-name synonyms, ensembled.

The embedding of a class is the mean of its normalised prompt embeddings,
re-normalised (CLIP's prompt ensembling). The prompts are recorded in the run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TEMPLATES: tuple[str, ...] = (
    "a brain MRI showing {}.",
    "an axial MRI slice of the brain with {}.",
    "a contrast-enhanced T1-weighted MRI scan showing {}.",
    "a medical image of {}.",
)

SYNONYMS: dict[str, tuple[str, ...]] = {
    "glioma": ("a glioma", "a glioma tumor", "a brain glioma"),
    "meningioma": ("a meningioma", "a meningioma tumor"),
    "notumor": ("no tumor", "a healthy brain", "a normal brain"),
    "pituitary": ("a pituitary tumor", "a pituitary adenoma"),
}


def class_prompts(
    class_names: tuple[str, ...], templates: tuple[str, ...] | None = None, synonyms: dict | None = None
) -> dict[str, list[str]]:
    """``{class: [prompt, ...]}``; a class with no synonyms uses its own name."""
    templates = tuple(templates or TEMPLATES)
    synonyms = {**SYNONYMS, **(synonyms or {})}
    return {c: [t.format(s) for t in templates for s in synonyms.get(c, (c.replace("_", " "),))] for c in class_names}


def tokenize(tokenizer, prompts: dict[str, list[str]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Token tensors for all prompts, plus the class index of each prompt."""
    flat = [p for ps in prompts.values() for p in ps]
    owner = torch.tensor([i for i, ps in enumerate(prompts.values()) for _ in ps])
    enc = tokenizer(flat, padding=True, truncation=True, max_length=77, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, owner


def class_embeddings(
    model, tokens: dict[str, torch.Tensor], owner: torch.Tensor, num_classes: int, raw: bool = False
) -> torch.Tensor:
    """``(C, d)`` class embeddings: the re-normalised mean of each class's unit-norm prompt
    embeddings (CLIP's ensemble); ``raw``: the plain mean of the unnormalised ones (CLAP's
    ``_get_base_text_features``: ``text_embeddings.mean(1)``)."""
    emb = model.get_text_features(**tokens).pooler_output.float()
    emb = emb if raw else F.normalize(emb, dim=-1)
    owner = owner.to(emb.device)
    summed = torch.zeros(num_classes, emb.shape[1], device=emb.device).index_add_(0, owner, emb)
    if raw:
        return summed / torch.bincount(owner, minlength=num_classes).clamp(min=1)[:, None].float()
    return F.normalize(summed, dim=-1)


class ClassTokens(nn.Module):
    """The tokenized class prompts, as buffers that move with the model and are never saved.

    ``input_ids`` and ``attention_mask`` are ``(T, L)`` for the ``T`` prompts; ``owner`` is
    ``(T,)``, the class index of each prompt.
    """

    def __init__(self, tokenizer, prompts: dict[str, list[str]]):
        super().__init__()
        tokens, owner = tokenize(tokenizer, prompts)
        self.register_buffer("input_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("attention_mask", tokens["attention_mask"], persistent=False)
        self.register_buffer("owner", owner, persistent=False)

    def batch(self, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The text tower's keyword arguments for every prompt, or for the prompts ``rows``."""
        if rows is None:
            return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        return {"input_ids": self.input_ids[rows], "attention_mask": self.attention_mask[rows]}


@torch.no_grad()
def zero_shot_classifier(clip, num_classes: int, opts, raw: bool = False) -> tuple[dict[str, list[str]], torch.Tensor]:
    """The class prompts of ``opts`` (a :class:`~vptlib.methods.base.TextOptions`) and their
    ``(C, d)`` ensembled class embeddings: zero-shot CLIP's classifier, which Tip-Adapter-F and
    CLAP start from (``raw``: unnormalised, :func:`class_embeddings`)."""
    prompts = class_prompts(opts.class_names, opts.templates, opts.synonyms)
    tokens, owner = tokenize(clip.tokenizer, prompts)
    return prompts, class_embeddings(clip.model, tokens, owner, num_classes, raw=raw)

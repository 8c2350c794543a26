"""Load CLIP by hub id or local folder (the models built offline are :mod:`.offline`).

``load_clip`` returns a :class:`Clip` bundle (model, tokenizer, image processor, and where
its files came from) and never runs remote code: weights load from safetensors, or from a
``pytorch_model.bin`` through ``torch.load(weights_only=True)``. Which folder a hub id means
(cache, download, revision) is :mod:`vptlib.models.hub`'s decision; a hub id that cannot be had
stops within seconds with a :class:`UserError` naming the route that works.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoTokenizer, CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vptlib.atomic import atomic_dir
from vptlib.errors import UserError

from . import hub, open_clip_format

DEFAULT_MODEL = hub.DEFAULT_MODEL


@dataclass
class Clip:
    """A CLIP model with the tokenizer and image processor that belong to it."""

    model: CLIPModel  # or open_clip_format.BiomedCLIP, which has the part of its interface the methods use
    tokenizer: CLIPTokenizer
    processor: CLIPImageProcessorPil
    name: str  # the id or folder it was loaded from
    source: hub.ModelSource  # its folder, repo and commit


def load_clip(
    name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu", revision: str | None = None
) -> Clip:
    """Load a CLIP from a local folder, or a hub id at ``revision`` (:mod:`vptlib.models.hub`)."""
    source = hub.resolve(str(name_or_path), revision)
    folder = source.folder
    weights = source.weights
    if weights is None:
        raise UserError(
            f"{folder} has no {' or '.join(hub.WEIGHTS)}; pass a folder holding a CLIPModel's "
            f"config.json, weights, tokenizer and preprocessor_config.json"
        )
    try:
        kw = dict(local_files_only=True, trust_remote_code=False)
        if open_clip_format.is_open_clip_folder(folder):  # BiomedCLIP's layout
            model, towers = open_clip_format.load(folder, _read_bins([weights]))
            processor = open_clip_format.image_processor(towers)
        else:
            model = _load_model(folder, weights)
            processor = AutoImageProcessor.from_pretrained(folder, **kw)
        tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
    except (OSError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the CLIP in {folder}: {why}") from None
    return Clip(model.to(device).eval(), tokenizer, processor, str(name_or_path), source)


def _load_model(folder: Path, weights: Path) -> CLIPModel:
    """The CLIPModel of ``folder``: safetensors through transformers, a ``.bin`` through
    ``torch.load(weights_only=True)`` (never pickled code), checked against config.json."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a second-long "Loading weights" bar is noise in every command's output
    check_config(folder)
    if weights.suffix == ".bin":
        return _model_from_state(folder, _read_bins([weights]))
    try:
        return CLIPModel.from_pretrained(folder, use_safetensors=True, local_files_only=True, trust_remote_code=False)
    except RuntimeError as exc:  # e.g. weights whose shapes do not fit config.json
        raise ValueError(str(exc).strip().splitlines()[0][:200]) from None
    except Exception as exc:  # safetensors raises its own error type for a truncated or empty file
        if type(exc).__name__ not in ("SafetensorError", "HeaderTooLarge", "HeaderTooSmall"):
            raise
        raise ValueError(f"the weights file is damaged ({exc})") from None


def _read_bins(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Tensors from pickled PyTorch checkpoints, read with ``weights_only=True``, which refuses
    every object a weights file does not need (and so any code a pickle could run)."""
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch's message suggests weights_only=False: never do that
            kind = "holds objects or code a weights file does not need" if "weights_only" in str(exc) else "is damaged"
            raise UserError(
                f"{path} {kind} ({type(exc).__name__}); refusing to load it. Only plain tensor "
                f"checkpoints are read: get the weights from a source you trust"
            ) from None
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise UserError(f"{path} is not a dictionary of tensors; refusing to load it")
        state.update(loaded)
    return state


# The sizes of each tower that must be whole numbers >= 1 (transformers divides by some).
_SIZES = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size")


def check_config(folder: Path) -> None:
    """Refuse a damaged ``config.json`` with a line naming the field, before transformers
    divides by a zero head count or builds a tower from a string width."""
    where = folder / "config.json"
    try:
        cfg = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{where} is not readable JSON ({exc}); restore it from the model's source") from None
    for tower in ("vision_config", "text_config"):
        sub = cfg.get(tower) if isinstance(cfg, dict) else None
        if not isinstance(sub, dict):
            continue  # transformers fills a missing tower with its defaults
        for key in (*_SIZES, *(("image_size", "patch_size") if tower == "vision_config" else ())):
            value = sub.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UserError(
                    f"{where}: {tower}.{key} must be a whole number >= 1, got {value!r}; the file is damaged"
                )
        width, heads = sub.get("hidden_size"), sub.get("num_attention_heads")
        if isinstance(width, int) and isinstance(heads, int) and width % heads:
            raise UserError(f"{where}: {tower}.hidden_size {width} is not divisible by num_attention_heads {heads}")


def _model_from_state(src: Path, state: dict[str, torch.Tensor]) -> CLIPModel:
    """A CLIPModel of ``src``'s config.json holding ``state``, every key accounted for."""
    check_config(src)
    try:
        model = CLIPModel(CLIPConfig.from_pretrained(src))
    except (OSError, ValueError) as exc:
        raise UserError(f"{src}/config.json is not a readable CLIP config ({str(exc).splitlines()[0][:120]})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not match the config
        raise UserError(
            f"{src}: the weights do not fit its config.json ({str(exc).splitlines()[1:2] or exc})"
        ) from None
    # position_ids: a buffer that checkpoints of 2021 carry and transformers 5 rebuilds itself.
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise UserError(f"{src} is not a CLIPModel checkpoint: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def convert_to_safetensors(src: str | Path, out: str | Path) -> Path:
    """Rewrite a local CLIP checkpoint that ships only ``pytorch_model*.bin`` as safetensors.

    A ``.bin`` loads as it is (read with ``torch.load(weights_only=True)``); safetensors is
    memory-mapped, so later loads are faster. The weights are checked against the config's
    architecture and saved as ``model.safetensors`` beside copies of the text files.
    """
    import shutil

    src, out = Path(src), Path(out)
    bins = sorted(src.glob("pytorch_model*.bin"))
    if not bins:
        raise UserError(f"{src} has no pytorch_model*.bin to convert")
    model = _model_from_state(src, _read_bins(bins))
    with atomic_dir(out) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.suffix in (".json", ".txt") and f.name != "config.json":
                shutil.copy2(f, tmp / f.name)
        model.save_pretrained(tmp, safe_serialization=True)
    return out


_LOADED: dict[tuple[str, str | None, str | None], tuple[Clip, str]] = {}


def shared_clip(name_or_path: str | Path, revision: str | None = None) -> tuple[Clip, str]:
    """The model and its fingerprint, loaded once per process and reused by every later run.

    A long-lived process (a notebook running a grid and its seeds, a sweep worker) then
    pays for loading and fingerprinting once. The bundle is shared, so its users must not
    modify it: every method builds on a copy. A local folder whose weight files changed
    (their ``model_signature``) is loaded again; one model is kept at a time.
    """
    key = (str(name_or_path), revision, model_signature(name_or_path))
    if key not in _LOADED:
        _LOADED.clear()
        clip = load_clip(name_or_path, revision=revision)
        _LOADED[key] = (clip, fingerprint(clip.model))
    return _LOADED[key]


def model_signature(name_or_path: str | Path) -> str | None:
    """A cheap identity of a local model folder: its weight and config files' names, sizes and
    modification times. None for a hub id (only the fingerprint of loaded weights tells)."""
    folder = Path(str(name_or_path)).expanduser()
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(repr(stats).encode()).hexdigest()[:16]


def fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter's name, dtype, shape and bytes: changes iff the weights do."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]

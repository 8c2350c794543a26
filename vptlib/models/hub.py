"""A model name, resolved to a local folder of files: a folder as given, or a hub id at a pinned
revision, found in the Hugging Face cache or downloaded from the configured endpoint.

Three routes reach the same files (config, tokenizer, processor and one weights file):

* **networked**: the files the study needs are downloaded from ``HF_ENDPOINT`` (huggingface.co,
  or a mirror) through ``HTTPS_PROXY``/``NO_PROXY``, with ``HF_TOKEN`` if set, into the Hugging
  Face cache (``HF_HUB_CACHE``, else ``HF_HOME``/hub), with the hub's own progress bars;
* **offline** (``HF_HUB_OFFLINE=1``, or no network): the cache's snapshot of the pinned commit.
  A commit sha never changes, so a complete snapshot of it is used without asking the network;
* **air-gapped**: ``vptlib model fetch --out DIR`` on a machine with a network writes a plain
  folder (``source.json`` names the repo, the commit and each file's sha256) to copy over.

Only the files the study reads are fetched: ``openai/clip-vit-base-patch32``'s ``main`` also
holds ``tf_model.h5`` and ``flax_model.msgpack`` (about 1.2 GB) that nothing here reads, and no
``model.safetensors`` (that exists only in the open pull request ``refs/pr/66``). The weights
file is ``model.safetensors`` where the revision has one, else ``pytorch_model.bin``, which
:mod:`vptlib.models.backbone` reads with ``torch.load(weights_only=True)``. transformers never sees a
hub id, so its own network calls (and its safetensors auto-conversion, online only) never run.
"Unreachable" is decided by the first request to the configured endpoint, with a short timeout.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vptlib.errors import UserError, did_you_mean
from vptlib.network import proxy_note

from . import transfer, verify
from .verify import file_sha256

# The revision a hub id is loaded at when none is given. openai/clip-vit-base-patch32's
# main: config, tokenizer, processor and pytorch_model.bin (the weights OpenAI published).
DEFAULT_MODEL = "openai/clip-vit-base-patch32"
PINNED = {DEFAULT_MODEL: "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268"}
# The first the revision has is used: transformers' weights, else open_clip's (BiomedCLIP ships
# only those; vptlib.models.open_clip_format loads them into transformers' classes).
WEIGHTS = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
TEXT_FILES = (
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "open_clip_config.json",  # open_clip's layout: this config, a BERT tokenizer (vocab.txt), its weights
    "vocab.txt",
)
# What a complete snapshot holds, per layout (and a tokenizer: tokenizer.json, vocab.json + merges.txt or vocab.txt).
NEEDED = ("config.json", "preprocessor_config.json")
NEEDED_OPEN_CLIP = ("open_clip_config.json",)
CONFIGS = ("config.json", "open_clip_config.json")  # transformers' layout first
SOURCE_FILE = "source.json"  # what `vptlib model fetch` writes beside the files
TIMEOUT_S = 10.0
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are, and which repo and commit they are, where known."""

    name: str  # as given: a hub id or a folder
    folder: Path
    repo: str | None = None
    revision: str | None = None  # as asked
    commit: str | None = None  # as resolved

    @property
    def weights(self) -> Path | None:
        return next((self.folder / w for w in WEIGHTS if (self.folder / w).is_file()), None)

    def record(self) -> dict[str, Any]:
        """What a run records of its model: repo, revision, commit, and each weights file's sha256."""
        w = self.weights
        return {
            "repo": self.repo,
            "revision": self.revision,
            "commit": self.commit,
            "weights": {w.name: file_sha256(w)} if w else {},
        }


def is_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name)) and not Path(name).expanduser().exists()


def missing_folder(name: str) -> str | None:
    """Why ``name`` is a local folder that does not exist, or None if it is not one.

    A path (``./x``, ``/x``, ``~/x``) or a name whose first part is a folder here (``models/nope``
    beside ``models/``) means a folder, not a hub id: it is refused at once with what that folder
    holds, instead of asking the hub for a repository that does not exist."""
    path = Path(name).expanduser()
    if path.exists():
        return None if path.is_dir() else f"model folder {name} is a file, not a folder"
    first = Path(name.split("/", 1)[0]).expanduser()
    path_like = name.startswith((".", "/", "~")) or not HUB_ID.match(name) or (first.is_dir() and name not in PINNED)
    if not path_like:
        return None
    parent = path.parent
    here = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    holds = f"; {parent} holds: {', '.join(here)}{did_you_mean(path.name, here)}" if here else ""
    return f"model folder {name} does not exist{holds}"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def cache_dir() -> Path:
    """The Hugging Face cache, as huggingface_hub finds it (read now, not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().upper() in ("1", "ON", "YES", "TRUE")


def default_folder(repo: str) -> str:
    return f"models/{repo.split('/')[-1]}"


def fetch_command(repo: str, revision: str) -> str:
    """The air-gapped route's first step, on a machine with a network."""
    return f"vptlib model fetch --model {repo} --revision {revision} --out {default_folder(repo)}"


def hf_command(repo: str, revision: str) -> str:
    """The same with huggingface_hub's own CLI, into that machine's cache."""
    include = " ".join(f"--include '{p}'" for p in ("*.json", "*.txt", *WEIGHTS))
    return f"hf download {repo} --revision {revision} {include}"


def air_gapped_help(repo: str, revision: str) -> str:
    folder = default_folder(repo)
    return (
        f"Air-gapped route: on a machine with a network run `{fetch_command(repo, revision)}`, copy {folder}/ "
        f"to this machine and pass `--model {folder}` (make book MODEL={folder}). Or run "
        f"`{hf_command(repo, revision)}` there and copy its Hugging Face cache into {cache_dir()} here "
        f"(with HF_HUB_OFFLINE=1, it is used from there)."
    )


def resolve(name: str, revision: str | None = None) -> ModelSource:
    """The folder holding ``name``'s files: a local folder, or a hub id at ``revision``
    (default: :data:`PINNED`, else ``main``), from the cache or downloaded once."""
    local = Path(name).expanduser()
    if local.is_dir():
        return _local(name, local, revision)
    why = missing_folder(name)
    if why:
        raise UserError(why)
    rev = revision or PINNED.get(name) or "main"
    cached, why = _from_cache(name, rev)
    if cached is not None and (SHA.match(rev) or offline()):
        return _checked(cached, remove_bad=True)  # a commit never changes: no need to ask the network
    if offline():
        raise UserError(
            f"cannot load CLIP {name!r} at revision {rev}: HF_HUB_OFFLINE is set and the Hugging Face cache "
            f"{cache_dir()} {why}. {air_gapped_help(name, rev)} If this machine has a network, unset HF_HUB_OFFLINE."
        )
    try:
        return _checked(download(name, rev), remove_bad=True)
    except Unreachable:
        if cached is not None:  # a branch name, offline: the commit it pointed to when last online
            return _checked(cached, remove_bad=True)
        raise


def _checked(src: ModelSource, remove_bad: bool) -> ModelSource:
    """``src`` once its weights are the bytes the hub and this code's pins say they are."""
    if src.weights is not None:
        verify.check_weights(src.weights, src.repo, src.commit, remove_bad)
    return src


class Unreachable(UserError):
    """The configured endpoint did not answer."""


def _local(name: str, folder: Path, revision: str | None) -> ModelSource:
    """A folder as given; its repo and commit from ``source.json`` or a hub-cache snapshot path."""
    repo = commit = None
    meta = folder / SOURCE_FILE
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
            repo, commit, listed = info.get("repo"), info.get("commit"), info.get("files") or {}
        except (OSError, ValueError, AttributeError):
            raise UserError(f"{meta} is not readable JSON; fetch the model again (vptlib model fetch)") from None
        verify.check_listed(folder, {str(k): str(v) for k, v in dict(listed).items()}, meta)
    elif folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        repo = folder.parent.parent.name.removeprefix("models--").replace("--", "/")
        commit = folder.name
    if revision and commit and SHA.match(revision) and revision != commit:
        raise UserError(
            f"{folder} holds {repo} at commit {commit}, not the pinned revision {revision}; "
            f"fetch that revision: {fetch_command(repo or name, revision)}"
        )
    return _checked(ModelSource(name, folder, repo, revision, commit), remove_bad=False)


def _from_cache(repo: str, rev: str) -> tuple[ModelSource | None, str]:
    """The cache's complete snapshot of ``repo`` at ``rev``, or None and what is missing."""
    from huggingface_hub import try_to_load_from_cache

    found = (try_to_load_from_cache(repo, c, cache_dir=cache_dir(), revision=rev) for c in CONFIGS)
    config = next((c for c in found if isinstance(c, str)), None)
    if config is None:
        snapshots = cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots"
        others = sorted(p.name for p in snapshots.glob("*") if p.is_dir()) if snapshots.is_dir() else []
        hint = (
            f" (it holds other commits: {', '.join(others)}; to use one, pass --revision <commit>, or set the "
            f"profile's revision)"
            if others
            else ""
        )
        return None, f"has no snapshot of {repo} at {rev}{hint}"
    snapshot = Path(config).parent
    needed = NEEDED_OPEN_CLIP if Path(config).name == "open_clip_config.json" else NEEDED
    missing = [f for f in needed if not (snapshot / f).is_file()]
    if not any((snapshot / w).is_file() for w in WEIGHTS):
        missing.append(" or ".join(WEIGHTS))
    if not any((snapshot / t).is_file() for t in ("tokenizer.json", "vocab.json", "vocab.txt")):
        missing.append("tokenizer.json")
    if missing:
        return None, f"has an incomplete snapshot of {repo} at {rev} ({snapshot}: no {', '.join(missing)})"
    return ModelSource(repo, snapshot, repo, rev, snapshot.name), ""


def download(repo: str, rev: str) -> ModelSource:
    """Download the files the study needs of ``repo`` at ``rev`` into the cache."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = endpoint()
    names: set[str] | None = None  # None: the endpoint lists no files (a mirror serving downloads only)
    try:
        info = HfApi(endpoint=url).model_info(repo, revision=rev, timeout=TIMEOUT_S)
        names = {s.rfilename for s in info.siblings or []}
    except RevisionNotFoundError:
        raise UserError(f"{url} has no revision {rev} of {repo}; check the profile's revision") from None
    except RepositoryNotFoundError:
        raise UserError(
            f"{url} has no model {repo} (if it is private or gated, set HF_TOKEN to a token that may read it)"
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        if status not in (404, 405, 501):  # those: no listing API here; the downloads below ask file by file
            raise UserError(
                f"the hub endpoint {url} answered HTTP {status} for {repo}; try again later, or use "
                f"a mirror (HF_ENDPOINT). {air_gapped_help(repo, rev)}"
            ) from None
    except Exception as exc:  # noqa: BLE001 - connection refused, DNS, timeout, proxy: all mean "not reachable"
        raise Unreachable(
            f"cannot load CLIP {repo!r}: the hub endpoint {url} did not answer{proxy_note(url)} within {TIMEOUT_S:.0f} s "
            f"({type(exc).__name__}), and the Hugging Face cache {cache_dir()} has no snapshot of it at {rev}. "
            f"If the hub is reachable only through a proxy or a mirror, set HTTPS_PROXY or HF_ENDPOINT. "
            f"{air_gapped_help(repo, rev)}"
        ) from None
    if names is not None and not any(w in names for w in WEIGHTS):
        raise UserError(f"{repo} at {info.sha} has neither {' nor '.join(WEIGHTS)}; this project loads no other format")
    if not os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"):
        from huggingface_hub.utils import enable_progress_bars

        enable_progress_bars()  # transformers turns them off when a model loads: a download shows its bar
    texts = [t for t in TEXT_FILES if names is None or t in names]
    weights = [w for w in WEIGHTS if names is None or w in names]
    folder = None
    for f in [*texts, *weights]:
        if f in WEIGHTS and folder is not None and any((folder / w).is_file() for w in WEIGHTS):
            break  # one weights file: the first the revision has
        try:
            path = transfer.bounded(
                lambda f=f: hf_hub_download(
                    repo, f, revision=rev, cache_dir=cache_dir(), endpoint=url, etag_timeout=TIMEOUT_S
                ),
                cache_dir() / f"models--{repo.replace('/', '--')}" / "blobs",
                f"{f} of {repo}",
            )
            folder = Path(path).parent  # snapshots/<commit>: the hub names it by the commit it served
        except EntryNotFoundError:
            if names is None:  # asked without a listing: this revision has no such file
                continue
            raise UserError(f"{url} lists {f} in {repo} at {rev} but does not serve it") from None
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken transfer: the hub resumes it on the next call
            raise UserError(
                f"downloading {f} of {repo} from {url} failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); run the same command again "
                f"to resume. {air_gapped_help(repo, rev)}"
            ) from None
    if folder is None or not any((folder / w).is_file() for w in WEIGHTS):
        raise UserError(
            f"{url} serves neither {' nor '.join(WEIGHTS)} of {repo} at {rev}; this project loads no other format"
        )
    return ModelSource(repo, folder, repo, rev, folder.name)

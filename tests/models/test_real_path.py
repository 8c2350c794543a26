"""The real model and the real data, against stand-ins of the hub and of Kaggle (tests/stand_ins.py).

Three routes to ``openai/clip-vit-base-patch32`` at its pinned revision, each from an empty
``HF_HOME``: networked first use, offline after that, and air-gapped (a folder, or a copied
cache, made on a machine with a network). Every request that is not to 127.0.0.1 goes to a
dead proxy, so nothing here can reach huggingface.co or Kaggle even on a machine with a network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from helpers import namespaces_work, on_a_full_disk
from stand_ins import (
    DEAD,
    LOCAL,
    MAIN_SHA,
    PR_REF,
    PR_SHA,
    PUBMED,
    PUBMED_SHA,
    REPO,
    HubStandIn,
    KaggleStandIn,
    ProxyStandIn,
    lay_out_clip,
    stand_in_pins,
)

from vptlib.data import fetch as kaggle
from vptlib.errors import UserError
from vptlib.models import hub, snapshot, transfer, verify
from vptlib.models.backbone import fingerprint, load_clip

ROOT = Path(__file__).resolve().parents[2]
# What the full profile's other backbones add: LAION's safetensors, BiomedCLIP's open_clip files.
BACKBONE_FILES = {
    "model.safetensors",
    "open_clip_config.json",
    "open_clip_pytorch_model.bin",
    "vocab.txt",
    "special_tokens_map.json",
}
STUDY_FILES = {
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "pytorch_model.bin",
}


@pytest.fixture(scope="module")
def hub_root(tiny_model, tmp_path_factory) -> Path:
    """The stand-in's files; its weights are pinned for this module (``VPTLIB_WEIGHT_PINS``)."""
    root = lay_out_clip(tiny_model, tmp_path_factory.mktemp("hub-root"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(verify.PINS_ENV, str(stand_in_pins(root)))
        yield root


@pytest.fixture
def stand_in(hub_root):
    with HubStandIn(hub_root) as server:
        yield server


def _reopen_session() -> None:
    from huggingface_hub.utils._http import close_session

    close_session()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HTTPS_PROXY=DEAD, HTTP_PROXY=DEAD, NO_PROXY=LOCAL, **extra)
    return env


def _vptlib(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vptlib", *args], capture_output=True, text=True, timeout=300, env=env)


def _run_args(prepared: Path, out: Path, model: str, seed: int) -> list[str]:
    return [
        "run",
        "--method",
        "zero_shot",
        "--data",
        str(prepared),
        "--model",
        model,
        "--out",
        str(out),
        "--device",
        "cpu",
        "--seed",
        str(seed),
        "--quiet",
    ]


def _record(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/zero_shot/*/config.json"))]


def test_networked_then_offline_then_without_network(stand_in, hub_root, prepared, tmp_path):
    """Route 1 then route 2, as commands: the first run downloads only what the study reads
    (no tf_model.h5, no flax_model.msgpack), at the pinned commit; the second runs from the
    cache with HF_HUB_OFFLINE=1; the third with the endpoint gone and no offline flag."""
    out = tmp_path / "runs"
    # TQDM_POSITION=-1: the hub's bars show as they do on a terminal (a pipe hides them)
    env = _cli_env(tmp_path, HF_ENDPOINT=stand_in.url, TQDM_POSITION="-1")
    first = _vptlib(*_run_args(prepared, out, REPO, 0), env=env)
    assert first.returncode == 0, first.stderr
    # the hub's progress bars: one per file downloaded, in bytes
    assert len(re.findall(r": 100%\|.*B/s\]", first.stderr)) >= len(STUDY_FILES), first.stderr
    assert set(stand_in.downloaded()) == STUDY_FILES
    assert not [p for p in stand_in.paths("HEAD") + stand_in.paths() if "tf_model" in p or "flax" in p]
    stand_in.stop()
    second = _vptlib(*_run_args(prepared, out, REPO, 1), env=_cli_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert second.returncode == 0, second.stderr
    third = _vptlib(*_run_args(prepared, out, REPO, 2), env=_cli_env(tmp_path, HF_ENDPOINT=stand_in.url))
    assert third.returncode == 0, third.stderr
    records = _record(out)
    assert len(records) == 3
    expected = {
        "repo": REPO,
        "revision": MAIN_SHA,
        "commit": MAIN_SHA,
        "weights": {"pytorch_model.bin": _sha256(hub_root / "main" / "pytorch_model.bin")},
    }
    assert all(r["model_source"] == expected for r in records)
    assert len({r["model_fingerprint"] for r in records}) == 1


def test_air_gapped_folder_from_model_fetch(stand_in, online, prepared, tmp_path, monkeypatch):
    """Route 3a: `vptlib model fetch` on the networked side; the folder alone runs offline."""
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    folder = snapshot.fetch(REPO, None, tmp_path / "models" / "clip-vit-base-patch32")
    meta = json.loads((folder / hub.SOURCE_FILE).read_text())
    assert (meta["repo"], meta["commit"]) == (REPO, MAIN_SHA)
    assert set(meta["files"]) == STUDY_FILES
    assert all(meta["files"][f] == _sha256(folder / f) for f in meta["files"])
    networked = load_clip(REPO)
    stand_in.stop()
    # the compute node: another empty cache, offline
    monkeypatch.setenv("HF_HOME", str(tmp_path / "node-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = load_clip(folder)
    assert fingerprint(clip.model) == fingerprint(networked.model)
    assert clip.source.record()["commit"] == MAIN_SHA and clip.source.record()["repo"] == REPO


def test_air_gapped_cache_from_the_hf_command_in_the_message(stand_in, online, monkeypatch):
    """Route 3b: the exact `hf download` line the error message gives fills a cache that then
    loads with HF_HUB_OFFLINE=1."""
    cmd = shlex.split(hub.hf_command(REPO, MAIN_SHA))
    hf = Path(sys.executable).parent / "hf"
    env = {**os.environ, "HF_ENDPOINT": stand_in.url}
    res = subprocess.run([str(hf), *cmd[1:]], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    stand_in.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = load_clip(REPO)
    assert clip.source.commit == MAIN_SHA and clip.source.weights.name == "pytorch_model.bin"


def _refusal_within(seconds: float) -> str:
    """The one-line error of loading the study's model, which must come within ``seconds``."""
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        load_clip(REPO)
    assert time.monotonic() - t0 < seconds
    return str(err.value)


def test_offline_with_an_empty_cache_names_the_air_gapped_route(online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = _refusal_within(10)
    assert "HF_HUB_OFFLINE is set" in msg and "Air-gapped route" in msg
    assert hub.fetch_command(REPO, MAIN_SHA) in msg and hub.hf_command(REPO, MAIN_SHA) in msg


def test_a_cache_of_another_commit_is_named(stand_in, online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    load_clip(REPO, revision=PR_REF)  # the cache now holds the pull request's commit only
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=f"it holds other commits: {PR_SHA}; to use one, pass --revision"):
        load_clip(REPO)


def test_a_partial_cache_is_named_not_called_missing(stand_in, online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    clip = load_clip(REPO)
    clip.source.weights.unlink()  # as if the weights' download never finished
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="incomplete snapshot .* no model.safetensors or pytorch_model.bin"):
        load_clip(REPO)


def test_unreachable_endpoint_fails_in_seconds_with_the_routes(online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    msg = _refusal_within(15)
    assert "http://127.0.0.1:9 did not answer" in msg
    assert "HTTPS_PROXY or HF_ENDPOINT" in msg and hub.fetch_command(REPO, MAIN_SHA) in msg


def test_a_dead_proxy_is_named(stand_in, online, monkeypatch):
    """Requests to the endpoint go through the environment's proxy; when it is dead, the
    message says so instead of blaming the hub."""
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    _reopen_session()
    with pytest.raises(UserError, match=f"did not answer through the proxy {DEAD}"):
        load_clip(REPO)
    assert stand_in.requests == []


def test_a_working_proxy_and_the_token_are_used(stand_in, online, monkeypatch):
    with ProxyStandIn() as proxy:
        for var in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(var, proxy.url)
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.setenv("no_proxy", "")
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        monkeypatch.setenv("HF_TOKEN", "hf_stand_in_token")
        _reopen_session()
        clip = load_clip(REPO)
    assert clip.source.commit == MAIN_SHA
    assert any(p.startswith(stand_in.url) for _, p, _ in proxy.requests)  # absolute URLs: proxied requests
    assert "Bearer hf_stand_in_token" in stand_in.authorization


@pytest.mark.parametrize("rev", [MAIN_SHA, PR_REF])
def test_a_mirror_without_the_listing_api_still_serves_the_files(hub_root, online, monkeypatch, rev):
    """Some mirrors and caching proxies serve /resolve/ but not /api/: the files are then asked
    for one by one, and the weights file is the first the revision has."""
    with HubStandIn(hub_root, api=False) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        clip = load_clip(REPO, revision=rev)
        want = "pytorch_model.bin" if rev == MAIN_SHA else "model.safetensors"
        assert clip.source.weights.name == want and clip.source.commit == (MAIN_SHA if rev == MAIN_SHA else PR_SHA)
        assert want in mirror.downloaded() and not {"tf_model.h5", "flax_model.msgpack"} & set(mirror.downloaded())


def test_hf_hub_cache_is_where_the_files_go(stand_in, online, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "shared-cache"))
    clip = load_clip(REPO)
    assert clip.source.folder.is_relative_to(tmp_path / "shared-cache")
    assert not (tmp_path / "hf-home" / "hub").exists()


def test_pull_request_revision_loads_safetensors_with_the_same_weights(stand_in, online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    main = load_clip(REPO)
    pr = load_clip(REPO, revision=PR_REF)
    assert (pr.source.commit, pr.source.weights.name) == (PR_SHA, "model.safetensors")
    assert main.source.weights.name == "pytorch_model.bin"
    assert fingerprint(pr.model) == fingerprint(main.model)


def test_a_branch_is_asked_online_and_taken_from_the_cache_offline(stand_in, online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    assert load_clip(REPO, revision="main").source.commit == MAIN_SHA
    stand_in.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_clip(REPO, revision="main").source.commit == MAIN_SHA


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_weights_are_read_as_tensors_only(tiny_model, tmp_path):
    """A pytorch_model.bin that holds code, not tensors, is refused before anything runs."""
    import pickle
    import shutil

    folder = tmp_path / "m"
    folder.mkdir()
    for f in tiny_model.iterdir():
        if f.suffix == ".json":
            shutil.copyfile(f, folder / f.name)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Exploit()}))
    with pytest.raises(UserError, match="refusing to load it"):
        load_clip(folder)
    assert not marker.exists()


def test_unknown_repo_and_revision_are_named(stand_in, online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    with pytest.raises(UserError, match="has no model openai/no-such-model .*HF_TOKEN"):
        load_clip("openai/no-such-model")
    with pytest.raises(UserError, match="has no revision " + "0" * 40):
        load_clip(REPO, revision="0" * 40)


def test_a_folder_holding_another_commit_is_refused(stand_in, online, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    folder = snapshot.fetch(REPO, PR_REF, tmp_path / "pr")
    with pytest.raises(UserError, match=f"holds {REPO} at commit {PR_SHA}, not the pinned revision {MAIN_SHA}"):
        load_clip(folder, revision=MAIN_SHA)


def test_preflight_of_the_full_profile_through_a_mirror(stand_in, online, monkeypatch, tmp_path, phantom_source):
    """`make book`'s first step with HF_ENDPOINT set to a reachable mirror: the model is
    downloaded at the profile's pinned revision and nothing says the hub is unreachable."""
    from vptlib.study.book import preflight

    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    text = (ROOT / "profiles" / "full.yaml").read_text().replace("data: data/full", f"data: {tmp_path / 'prepared'}")
    profile = tmp_path / "full.yaml"
    profile.write_text(text)
    preflight(profile, data=str(phantom_source))
    assert set(stand_in.downloaded()) == STUDY_FILES | BACKBONE_FILES
    assert any(MAIN_SHA in p for p in stand_in.paths())
    # The profile's second backbone came the same way, at the commit the profile pins, .bin only.
    pubmed = [p for m in ("HEAD", "GET") for p in stand_in.paths(m) if p.startswith(f"/{PUBMED}/")]
    assert any(p == f"/{PUBMED}/resolve/{PUBMED_SHA}/pytorch_model.bin" for p in pubmed), pubmed
    assert not any("model.safetensors" in p and PUBMED in p for p in stand_in.paths())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # then offline: both from the cache, nothing asked
    asked = len(stand_in.requests)
    preflight(profile, data=str(phantom_source))
    assert len(stand_in.requests) == asked


# ---------------------------------------------------------------- the Kaggle dataset


def _kaggle_archive(phantom_source: Path, path: Path) -> Path:
    """A zip laid out as Kaggle's: Training/ and Testing/, class folders, files named Tr-gl_0010.jpg."""
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(phantom_source.rglob("*.jpg")):
            stem, number = f.stem.rsplit("_", 1)
            z.write(f, f"{f.parent.parent.name}/{f.parent.name}/{stem}_{int(number) + 10:04d}.jpg")
    return path


@pytest.fixture
def kaggle_env(monkeypatch, tmp_path):
    monkeypatch.delenv("VPTLIB_OFFLINE", raising=False)
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")  # kagglehub's client then calls localhost:7777
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, DEAD)
    monkeypatch.setenv("NO_PROXY", LOCAL)
    monkeypatch.setenv("no_proxy", LOCAL)


def _kaggle_stand_in(archive: Path) -> KaggleStandIn:
    try:
        return KaggleStandIn(archive, kaggle.KAGGLE_HANDLE)
    except OSError:
        pytest.skip("port 7777 (kagglehub's test endpoint) is in use on this machine")


def test_kaggle_download_without_credentials_then_prepare(kaggle_env, phantom_source, tmp_path, capsys):
    """kagglehub fetches the pinned version anonymously; source.json records it; prepare
    reads the real archive's names and carries the record into the prepared set."""
    from vptlib.data.prepare import PrepareOptions, prepare
    from vptlib.data.sets import set_info

    archive = _kaggle_archive(phantom_source, tmp_path / "archive.zip")
    with _kaggle_stand_in(archive) as server:
        dest = kaggle.fetch(tmp_path / "kaggle-brain-mri")
    assert any("DownloadDataset" in p for _, p, _ in server.requests)
    assert (dest / "Training" / "notumor" / "Tr-no_0010.jpg").is_file()
    origin = json.loads((dest / kaggle.SOURCE_FILE).read_text())
    assert (origin["handle"], origin["version"]) == (kaggle.KAGGLE_HANDLE, 1)
    assert origin["files"] == {"Training": 160, "Testing": 160}
    # the pinned version holds 5,712 + 1,311 files: a stand-in with 160 + 160 is said to differ
    assert f"should hold {kaggle.EXPECTED_FILES}" in capsys.readouterr().out
    assert origin["file_list_sha256"] == kaggle.file_list_sha256(dest)
    out = tmp_path / "prepared"
    prepare(PrepareOptions(dest, out, train_per_class=10, test_per_class=5, seed=0))
    assert set_info(out)["origin"] == origin


def test_kaggle_credentials_asked_for_are_explained(kaggle_env, phantom_source, tmp_path):
    with _kaggle_stand_in(_kaggle_archive(phantom_source, tmp_path / "a.zip")) as server:
        server.dataset = ("someone", "else", 1)  # what Kaggle answers for a dataset it will not serve anonymously
        with pytest.raises(UserError, match="kagglehub could not download") as err:
            kaggle.fetch(tmp_path / "k", handle=kaggle.KAGGLE_HANDLE)
    assert "--archive" in str(err.value)


def test_kaggle_unreachable_fails_in_seconds_and_the_archive_route_works(kaggle_env, phantom_source, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        kaggle.fetch(tmp_path / "k")  # nothing listens on localhost:7777
    assert time.monotonic() - t0 < 15
    msg = str(err.value)
    assert (
        "did not answer" in msg and f"vptlib data fetch --archive /path/to/archive.zip --dest {tmp_path / 'k'}" in msg
    )
    archive = _kaggle_archive(phantom_source, tmp_path / "archive.zip")
    dest = kaggle.fetch(tmp_path / "k", archive=archive)
    origin = json.loads((dest / kaggle.SOURCE_FILE).read_text())
    assert origin["handle"] == "manual: archive.zip" and origin["files"]["Testing"] == 160


def test_a_first_build_on_a_networked_machine_fetches_model_and_data(
    stand_in, online, kaggle_env, monkeypatch, phantom_source, tmp_path
):
    """`git clone; make book`: preflight and the data step fetch both, with no other step."""
    from vptlib.data.sets import set_info
    from vptlib.study.book import preflight, prepare_data

    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    text = (ROOT / "profiles" / "full.yaml").read_text()
    text = text.replace("data: data/full", f"data: {tmp_path / 'full'}")
    text = text.replace("kaggle: data/kaggle-brain-mri", f"kaggle: {tmp_path / 'kaggle-brain-mri'}")
    text = text.replace("train_per_class: 120, test_per_class: 80", "train_per_class: 10, test_per_class: 5")
    profile = tmp_path / "full.yaml"
    profile.write_text(text)
    with _kaggle_stand_in(_kaggle_archive(phantom_source, tmp_path / "archive.zip")):
        preflight(profile)
    out = prepare_data(profile)  # the Makefile's next step; the dataset is already there
    assert set_info(out)["origin"]["handle"] == kaggle.KAGGLE_HANDLE
    assert set(stand_in.downloaded()) == STUDY_FILES | BACKBONE_FILES


def test_credentials_hint_for_401_and_403():
    class Response:
        status_code = 401

    class Denied(Exception):
        response = Response()

    assert "KAGGLE_USERNAME and KAGGLE_KEY" in kaggle._credentials_hint(Denied())
    assert kaggle._credentials_hint(ValueError()) == ""


def test_an_archive_that_escapes_its_folder_is_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("Training/glioma/a.jpg", b"x")
        z.writestr("Testing/glioma/a.jpg", b"x")
        z.writestr("../../escape.txt", b"x")
    with pytest.raises(UserError, match="outside its folder"):
        kaggle.fetch(tmp_path / "k", archive=bad)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_readme_states_the_pins_and_routes_the_code_uses():
    """The README's real-path section is checked against the constants the code runs with."""
    readme = (ROOT / "docs" / "guide.md").read_text()
    sha = hub.PINNED[hub.DEFAULT_MODEL]
    weights = verify.PINNED_WEIGHTS[(hub.DEFAULT_MODEL, sha, "pytorch_model.bin")]
    assert f"(`{weights[:12]}…` for OpenAI's" in readme
    assert f"past {transfer.DEADLINE_S:.0f} s per file (`{transfer.DEADLINE_ENV}`)" in readme
    assert f"below {transfer.MIN_RATE // 1024} kB/s after {transfer.GRACE_S:.0f} s" in readme
    assert f"commit `{sha}`" in readme
    assert hub.fetch_command(hub.DEFAULT_MODEL, sha) in readme
    assert kaggle.KAGGLE_HANDLE in readme and f"{sum(kaggle.EXPECTED_FILES.values()):,}\nimages" in readme
    assert (
        f"with a {hub.TIMEOUT_S:.0f} s timeout" in readme
        and f"kagglehub uses, with\n{kaggle.TIMEOUT_S:.0f} s" in readme
    )
    for profile in ("full", "kaggle-full"):
        text = (ROOT / "profiles" / f"{profile}.yaml").read_text()
        assert f"revision: {sha}" in text and f"kaggle_handle: {kaggle.KAGGLE_HANDLE}" in text


# --- Weights are the bytes the hub lists (issue 43) ---


def _weights_left(tmp_path: Path) -> list[Path]:
    cache = tmp_path / "hf-home" / "hub" / f"models--{REPO.replace('/', '--')}"
    return (
        [p for p in cache.rglob("pytorch_model.bin*")] + [p for p in (cache / "blobs").glob("*") if len(p.name) == 64]
        if cache.exists()
        else []
    )


def test_a_mirror_serving_other_bytes_of_the_same_size_is_refused(hub_root, online, monkeypatch, tmp_path):
    """A proxy zeroes 64 bytes of the weights and keeps the size: huggingface_hub accepts them;
    vptlib compares them with the sha256 the hub lists, deletes them and refuses, one line."""
    with HubStandIn(hub_root, corrupt=True) as liar:
        env = _cli_env(tmp_path, HF_ENDPOINT=liar.url)
        res = _vptlib("model", "fetch", "--model", REPO, "--out", str(tmp_path / "m"), env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "has sha256" in res.stderr and "the hub's listed sha256" in res.stderr and "deleted" in res.stderr
    assert not (tmp_path / "m").exists()
    assert not [p for p in _weights_left(tmp_path) if p.name.endswith(".bin") or len(p.name) == 64]
    # The honest hub afterwards: the same command works and records the listed sha256.
    with HubStandIn(hub_root) as honest:
        ok = _vptlib(
            "model",
            "fetch",
            "--model",
            REPO,
            "--out",
            str(tmp_path / "m"),
            env=_cli_env(tmp_path, HF_ENDPOINT=honest.url),
        )
    assert ok.returncode == 0, ok.stderr
    listed = hashlib.sha256((hub_root / "main" / "pytorch_model.bin").read_bytes()).hexdigest()
    assert json.loads((tmp_path / "m" / hub.SOURCE_FILE).read_text())["files"]["pytorch_model.bin"] == listed


def test_a_cache_blob_that_is_not_its_name_is_refused_offline(stand_in, online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    blob = load_clip(REPO).source.weights.resolve()
    data = bytearray(blob.read_bytes())
    data[2000:2064] = bytes(64)
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="the hub's listed sha256 .* deleted"):
        load_clip(REPO)
    assert not blob.exists()


def test_the_pinned_sha256_refuses_a_hub_that_lies_consistently(stand_in, online, monkeypatch):
    """The stand-in serves random weights at the real commit, with matching headers: only the
    sha256 pinned in the code tells them from OpenAI's."""
    monkeypatch.delenv(verify.PINS_ENV)
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    pin = verify.PINNED_WEIGHTS[(REPO, MAIN_SHA, "pytorch_model.bin")]
    with pytest.raises(UserError, match=f"not {pin[:16]}… \\(the sha256 vptlib pins for {REPO}"):
        load_clip(REPO)


def test_a_copied_folder_is_checked_against_its_source_json(stand_in, online, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    folder = snapshot.fetch(REPO, None, tmp_path / "clip")
    weights = folder / "pytorch_model.bin"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"pytorch_model.bin is not the file .*source.json lists .* damaged"):
        hub.resolve(str(folder))
    weights.unlink()
    with pytest.raises(UserError, match=r"pytorch_model.bin is missing; .*source.json lists it"):
        hub.resolve(str(folder))
    (folder / hub.SOURCE_FILE).write_text("{not json")
    res = _vptlib(
        "run", "--method", "zero_shot", "--data", "x", "--model", str(folder), "--quiet", env=_cli_env(tmp_path)
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_a_trickling_server_is_abandoned_with_its_progress_kept(hub_root, online, monkeypatch, tmp_path):
    """One byte every 2 s never trips a read timeout; the overall deadline does."""
    monkeypatch.setenv(transfer.DEADLINE_ENV, "3")
    with HubStandIn(hub_root, trickle_s=2.0) as slow:
        monkeypatch.setenv("HF_ENDPOINT", slow.url)
        t0 = time.monotonic()
        with pytest.raises(UserError, match="abandoned: still running after 3 s .* resumes it"):
            hub.resolve(REPO)
        assert time.monotonic() - t0 < 20


@pytest.mark.skipif(not namespaces_work(), reason="no unprivileged user and mount namespaces here")
def test_model_fetch_onto_a_full_disk_names_the_destination(stand_in, tmp_path):
    """The download fills the cache; the copy into --out meets a full disk: one line naming --out."""
    env = _cli_env(tmp_path, HF_ENDPOINT=stand_in.url)
    out = tmp_path / "full" / "clip"
    done = on_a_full_disk(
        tmp_path / "full",
        [sys.executable, "-m", "vptlib", "model", "fetch", "--model", REPO, "--out", str(out)],
        env=env,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot write {out}: the disk is full" in done.stderr

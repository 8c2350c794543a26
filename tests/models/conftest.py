"""Fixtures of the model tests that talk to a hub: this process as a networked machine whose
only network is 127.0.0.1, and the stand-in hub serving BiomedCLIP's layout."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
from stand_ins import DEAD, LOCAL


@pytest.fixture
def online(monkeypatch, tmp_path):
    """This process as a networked machine with an empty cache whose only network is 127.0.0.1.

    huggingface_hub reads the proxy variables when it opens its HTTP session, once a process
    (as a user's command does); each test here opens its own, after setting them."""
    from huggingface_hub.utils._http import close_session

    close_session()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read when the hub was imported
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, DEAD)
    monkeypatch.setenv("NO_PROXY", LOCAL)
    monkeypatch.setenv("no_proxy", LOCAL)
    yield tmp_path
    close_session()


@pytest.fixture(scope="module")
def biomed_root(tmp_path_factory):
    """A stand-in hub root holding a random-weight BiomedCLIP in open_clip's layout, its weights
    pinned for the module (VPTLIB_WEIGHT_PINS)."""
    import hashlib
    import json

    from stand_ins import BIOMED, BIOMED_SHA, write_tiny_biomedclip

    from vptlib.models import verify

    root = tmp_path_factory.mktemp("biomed-hub")
    folder = write_tiny_biomedclip(root / "biomedclip")
    weights = folder / "open_clip_pytorch_model.bin"
    pins = {f"{BIOMED}@{BIOMED_SHA}/{weights.name}": hashlib.sha256(weights.read_bytes()).hexdigest()}
    (root / "pins.json").write_text(json.dumps(pins))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(verify.PINS_ENV, str(root / "pins.json"))
        yield root


@pytest.fixture
def biomed_stand_in(biomed_root):
    from stand_ins import HubStandIn

    with HubStandIn(biomed_root) as server:
        yield server

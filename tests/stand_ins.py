"""Stand-ins for the two real services, on 127.0.0.1 only, for the real-path tests.

``HubStandIn`` answers ``huggingface_hub`` the way huggingface.co does for an anonymous client,
for ``openai/clip-vit-base-patch32`` laid out as the real repo is (May 2026): branch ``main`` at
commit ``3d74acf…`` holds the text files, ``pytorch_model.bin``, ``tf_model.h5`` and
``flax_model.msgpack`` and no ``model.safetensors``; the open pull request ``refs/pr/66`` (commit
``c237dc4…``) holds the same files plus ``model.safetensors``. The weights are the tiny CLIP's, so
the tests run in seconds; ``../shared/tools/stand-in-hub`` serves the full-size layout and was used
to check that this one answers the same requests the same way. Answers, as the hub gives them:

* ``HEAD|GET /{repo}/resolve/{rev}/{file}``: a git file answers 200 with ``ETag`` (its git blob
  sha1), ``X-Repo-Commit`` and ``Content-Length``; an LFS file (``*.bin``, ``*.safetensors``,
  ``*.h5``, ``*.msgpack``) answers 302 to an absolute "CDN" URL with ``X-Linked-Etag`` (sha256),
  ``X-Linked-Size`` and ``X-Repo-Commit``, which the client reads off the redirect;
* ``GET /api/models/{repo}[/revision/{rev}]``: ``sha`` and ``siblings``;
* 401 ``RepoNotFound`` for an unknown repo, 404 ``RevisionNotFound``, 404 ``EntryNotFound``.

``KaggleStandIn`` answers kagglehub's ``DownloadDataset`` call (``KAGGLE_API_ENVIRONMENT=TEST``
sends it to ``http://localhost:7777``) with a 302 to the archive, as Kaggle redirects to storage.
Every request is kept in ``.requests`` (method, path, status) for the tests to read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch

REPO = "openai/clip-vit-base-patch32"
MAIN_SHA = "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268"
PR_SHA = "c237dc49a33fc61debc9276459120b7eac67e7ef"
PR_REF = "refs/pr/66"
# The full profile's second backbone, laid out as its repo is: main holds the text files and
# pytorch_model.bin (with tf_model.h5 and flax_model.msgpack), no safetensors. The commit is the
# one the profile pins; the weights are the tiny CLIP's, like the first repo's.
PUBMED = "flaviagiammarino/pubmed-clip-vit-base-patch32"
PUBMED_SHA = "26c0c67f6da303ad2a38909130bd35744ea93517"
LAION = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
LAION_SHA = "89abcdef0123456789abcdef0123456789abcdef"  # invented, like BIOMED_SHA: the profile pins neither
BIOMED = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
# An invented commit for the stand-in's copy of BiomedCLIP (open_clip's layout): no record of the
# real repo's commit could be reached where this was written (the full profile says so).
BIOMED_SHA = "0123456789abcdef0123456789abcdef01234567"
REPOS = (REPO, PUBMED, LAION, BIOMED)
LFS = (".bin", ".safetensors", ".h5", ".msgpack")
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once
LOCAL = "127.0.0.1,localhost"


def lay_out_clip(tiny_model: Path, root: Path) -> Path:
    """``root/main`` and ``root/refs/pr/66`` with the tiny CLIP in the real repo's layout."""
    from safetensors.torch import load_file

    main, pr = root / "main", root / PR_REF
    main.mkdir(parents=True, exist_ok=True)
    for f in tiny_model.iterdir():
        if f.suffix in (".json", ".txt") and f.name != "source.json":
            shutil.copyfile(f, main / f.name)
    state = load_file(str(tiny_model / "model.safetensors"))
    # A 2021 checkpoint carries the position_ids buffers that transformers 5 rebuilds itself.
    n_vis = json.loads((tiny_model / "config.json").read_text())["vision_config"]
    patches = (n_vis["image_size"] // n_vis["patch_size"]) ** 2 + 1
    state["vision_model.embeddings.position_ids"] = torch.arange(patches)[None]
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    torch.save(state, main / "pytorch_model.bin")
    (main / "tf_model.h5").write_bytes(b"\x89HDF placeholder: nothing reads it")
    (main / "flax_model.msgpack").write_bytes(b"placeholder: nothing reads it")
    shutil.copytree(main, pr)
    shutil.copyfile(tiny_model / "model.safetensors", pr / "model.safetensors")
    shutil.copytree(main, root / "pubmed")
    shutil.copytree(pr, root / "laion")  # LAION's repo has transformers' safetensors beside open_clip's files
    write_tiny_biomedclip(root / "biomedclip")
    return root


def stand_in_pins(root: Path) -> Path:
    """The stand-in's random weights sit at the real commits, whose real sha256 vptlib pins:
    this file (for ``VPTLIB_WEIGHT_PINS``) pins the stand-in's bytes instead."""

    def sha(f: Path) -> str:
        return hashlib.sha256(f.read_bytes()).hexdigest()

    pins = {
        f"{REPO}@{MAIN_SHA}/pytorch_model.bin": sha(root / "main" / "pytorch_model.bin"),
        f"{REPO}@{PR_SHA}/model.safetensors": sha(root / PR_REF / "model.safetensors"),
        f"{PUBMED}@{PUBMED_SHA}/pytorch_model.bin": sha(root / "pubmed" / "pytorch_model.bin"),
        f"{LAION}@{LAION_SHA}/model.safetensors": sha(root / "laion" / "model.safetensors"),
        f"{BIOMED}@{BIOMED_SHA}/open_clip_pytorch_model.bin": sha(root / "biomedclip" / "open_clip_pytorch_model.bin"),
    }
    (root / "pins.json").write_text(json.dumps(pins))
    return root / "pins.json"


# ------------------------------------------------------------------ BiomedCLIP's layout
BIOMED_WORDS = "a an the of with brain mri showing no tumor glioma meningioma pituitary adenoma healthy normal axial slice medical image scan contrast enhanced t1 weighted photo"


def write_tiny_biomedclip(folder: Path, seed: int = 0) -> Path:
    """A random-weight BiomedCLIP in open_clip's layout, small: ``open_clip_config.json``,
    ``open_clip_pytorch_model.bin`` keyed as open_clip's state_dict names timm's ViT and the
    BERT (with the BERT pooler and position-id buffers an older open_clip saved), and a BERT
    tokenizer (``vocab.txt``)."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *BIOMED_WORDS.split()]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 256})
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            }
        )
    )
    D, L, P, G, E, Dt, Lt, It = 128, 2, 16, 2, 32, 128, 2, 256  # widths (two heads of 64), layers, patch, grid, embed
    hid = (Dt + E) // 2

    def r(*shape: int, scale: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def ln(prefix: str, width: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + r(width), f"{prefix}.bias": r(width)}

    s: dict[str, torch.Tensor] = {
        "visual.trunk.cls_token": r(1, 1, D),
        "visual.trunk.pos_embed": r(1, 1 + G * G, D),
        "visual.trunk.patch_embed.proj.weight": r(D, 3, P, P),
        "visual.trunk.patch_embed.proj.bias": r(D),
        **ln("visual.trunk.norm", D),
        "visual.head.proj.weight": r(E, D),
        "logit_scale": torch.tensor(4.6052),
    }
    for i in range(L):
        b = f"visual.trunk.blocks.{i}."
        s.update(ln(b + "norm1", D) | ln(b + "norm2", D))
        s.update({b + "attn.qkv.weight": r(3 * D, D), b + "attn.qkv.bias": r(3 * D)})
        s.update({b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D)})
        s.update({b + "mlp.fc1.weight": r(4 * D, D), b + "mlp.fc1.bias": r(4 * D)})
        s.update({b + "mlp.fc2.weight": r(D, 4 * D), b + "mlp.fc2.bias": r(D)})
    t = "text.transformer."
    s.update(
        {
            t + "embeddings.word_embeddings.weight": r(len(vocab), Dt),
            t + "embeddings.position_embeddings.weight": r(64, Dt),
            t + "embeddings.token_type_embeddings.weight": r(2, Dt),
            t + "embeddings.position_ids": torch.arange(64)[None],
            **ln(t + "embeddings.LayerNorm", Dt),
            t + "pooler.dense.weight": r(Dt, Dt),
            t + "pooler.dense.bias": r(Dt),
            "text.proj.0.weight": r(hid, Dt),
            "text.proj.2.weight": r(E, hid),
        }
    )
    for i in range(Lt):
        b = f"{t}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            s.update({f"{b}attention.self.{name}.weight": r(Dt, Dt), f"{b}attention.self.{name}.bias": r(Dt)})
        s.update({b + "attention.output.dense.weight": r(Dt, Dt), b + "attention.output.dense.bias": r(Dt)})
        s.update(ln(b + "attention.output.LayerNorm", Dt))
        s.update({b + "intermediate.dense.weight": r(It, Dt), b + "intermediate.dense.bias": r(It)})
        s.update({b + "output.dense.weight": r(Dt, It), b + "output.dense.bias": r(Dt)})
        s.update(ln(b + "output.LayerNorm", Dt))
    torch.save(s, folder / "open_clip_pytorch_model.bin")
    config = {
        "model_cfg": {
            "embed_dim": E,
            "vision_cfg": {
                "timm_model_name": "vit_base_patch16_224",
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": P * G,
            },
            "text_cfg": {
                "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": 256,
            },
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0, host: str = "127.0.0.1"):
        self.requests: list[tuple[str, str, int]] = []
        self.authorization: list[str | None] = []  # each request's Authorization header
        bound = type(handler.__name__, (handler,), {"owner": self})  # one handler class per server
        self.httpd = ThreadingHTTPServer((host, port), bound)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self, method: str = "GET") -> list[str]:
        return [p for m, p, _ in self.requests if m == method]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: _Server

    def log_message(self, *args):  # no stderr access log
        pass

    def reply(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None, head: bool = False):
        if isinstance(body, (dict, list)):
            body, ctype = json.dumps(body).encode(), "application/json"
        else:
            ctype = "application/octet-stream"
        self.owner.requests.append((self.command, self.path, status))
        self.owner.authorization.append(self.headers.get("Authorization"))
        self.send_response(status)
        headers = {"Content-Type": ctype, **(headers or {})}
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)


def _tree_entry(path: Path) -> dict:
    data = path.read_bytes()
    entry = {
        "type": "file",
        "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
        "size": len(data),
        "path": path.name,
    }
    if path.suffix in LFS:
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


class _HubHandler(_Handler):
    def do_HEAD(self):
        self.route(head=True)

    def do_GET(self):
        self.route(head=False)

    def route(self, head: bool) -> None:
        hub: HubStandIn = self.owner  # type: ignore[assignment]
        segs = [unquote(s) for s in urlsplit(self.path).path.split("/")[1:]]
        if segs == ["api", "agent-harnesses"]:
            return self.reply(200, {"standardEnvVars": [], "harnesses": {}}, head=head)
        if len(segs) >= 4 and segs[:2] == ["api", "models"]:
            if not hub.api:  # a mirror that serves downloads only
                return self.reply(404, b"Not Found", head=head)
            repo = "/".join(segs[2:4])
            if repo not in REPOS:
                return self.reply(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head)
            kind, rest = (segs[4], segs[5:]) if len(segs) > 4 else ("", [])
            rev = ("/".join(rest[:3]) if rest[:1] == ["refs"] else rest[0]) if rest else "main"
            ref = hub.ref(rev, repo)
            if ref is None:
                return self.reply(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"}, head)
            commit, folder = ref
            if kind == "tree":  # snapshot_download's listing (hf download --include)
                return self.reply(200, [_tree_entry(p) for p in sorted(folder.iterdir()) if p.is_file()], head=head)
            siblings = [{"rfilename": p.name} for p in sorted(folder.iterdir()) if p.is_file()]
            return self.reply(
                200, {"id": repo, "modelId": repo, "sha": commit, "private": False, "siblings": siblings}, head=head
            )
        if len(segs) >= 5 and segs[2] == "resolve":
            repo = "/".join(segs[:2])
            if repo not in REPOS:
                return self.reply(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head)
            rev, path = ("/".join(segs[3:6]), segs[6:]) if segs[3] == "refs" else (segs[3], segs[4:])
            ref = hub.ref(rev, repo)
            if ref is None:
                return self.reply(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"}, head)
            commit, folder = ref
            f = folder / "/".join(path)
            if not f.is_file():
                return self.reply(
                    404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head
                )
            data = f.read_bytes()
            if f.suffix in LFS:
                sha256 = hashlib.sha256(data).hexdigest()
                hub.blobs[sha256] = f
                return self.reply(
                    302,
                    b"",
                    {
                        "Location": f"{hub.cdn.url}/lfs/{sha256}",
                        "X-Repo-Commit": commit,
                        "ETag": f'"{sha256}"',
                        "X-Linked-Etag": f'"{sha256}"',
                        "X-Linked-Size": str(len(data)),
                    },
                    head,
                )
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            return self.reply(200, data, {"ETag": f'"{blob}"', "X-Repo-Commit": commit}, head)
        return self.reply(404, {"error": "Sorry, we can't find the page you are looking for."}, head=head)


class _CdnHandler(_Handler):
    """The LFS storage the hub redirects to: another origin, as cdn-lfs.hf.co is."""

    def do_HEAD(self):
        self.route(head=True)

    def do_GET(self):
        self.route(head=False)

    def route(self, head: bool) -> None:
        blobs = self.owner.blobs
        sha = self.path.split("?")[0].rsplit("/", 1)[-1]
        if not self.path.startswith("/lfs/") or sha not in blobs:
            return self.reply(404, head=head)
        hub = self.owner.hub
        hub.requests.append((self.command, f"/cdn/lfs/{sha}", 200))
        data = blobs[sha].read_bytes()
        if hub.corrupt:  # a mirror or proxy that serves other bytes of the same size
            data = data[:1024] + bytes(64) + data[1088:]
        if hub.trickle_s and not head:  # a server that sends one byte every trickle_s seconds
            self.owner.requests.append((self.command, self.path, 200))
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{sha}"')
            self.end_headers()
            for i in range(len(data)):
                if hub.stopped.wait(hub.trickle_s):
                    return
                try:
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return
            return
        return self.reply(200, data, {"ETag": f'"{sha}"'}, head=head)


class HubStandIn(_Server):
    """``corrupt``: the CDN serves the weights with 64 bytes zeroed (same size, same headers);
    ``trickle_s``: it sends them one byte every ``trickle_s`` seconds."""

    def __init__(self, root: Path, api: bool = True, corrupt: bool = False, trickle_s: float = 0.0):
        self.root, self.api, self.corrupt, self.trickle_s = root, api, corrupt, trickle_s
        self.stopped = threading.Event()
        self.blobs: dict[str, Path] = {}
        super().__init__(_HubHandler)
        self.cdn = _Server(_CdnHandler)
        self.cdn.blobs, self.cdn.hub = self.blobs, self

    def __enter__(self):
        self.cdn.__enter__()
        return super().__enter__()

    def stop(self) -> None:
        self.stopped.set()
        super().stop()
        self.cdn.stop()

    def ref(self, rev: str, repo: str = REPO) -> tuple[str, Path] | None:
        if repo == LAION:
            return (LAION_SHA, self.root / "laion") if rev in ("main", LAION_SHA) else None
        if repo == BIOMED:
            return (BIOMED_SHA, self.root / "biomedclip") if rev in ("main", BIOMED_SHA) else None
        if repo == PUBMED:
            return (PUBMED_SHA, self.root / "pubmed") if rev in ("main", PUBMED_SHA) else None
        refs = {"main": MAIN_SHA, MAIN_SHA: MAIN_SHA, PR_REF: PR_SHA, PR_SHA: PR_SHA}
        commit = refs.get(rev)
        if commit is None:
            return None
        return commit, self.root / ("main" if commit == MAIN_SHA else PR_REF)

    def downloaded(self) -> list[str]:
        """The file names whose bytes were sent (GET of a resolve or of its CDN redirect)."""
        names = []
        for m, p, status in self.requests:
            if m == "GET" and "/resolve/" in p and status == 200:
                names.append(p.rsplit("/", 1)[-1])
            if m == "GET" and p.startswith("/cdn/lfs/") and status == 200:
                names.append(self.blobs[p.rsplit("/", 1)[-1]].name)
        return names


class _KaggleHandler(_Handler):
    def do_HEAD(self):
        self.reply(404, head=True)

    def do_POST(self):
        kaggle: KaggleStandIn = self.owner  # type: ignore[assignment]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path.endswith("/datasets.DatasetApiService/DownloadDataset"):
            key = (body.get("ownerSlug"), body.get("datasetSlug"), body.get("datasetVersionNumber"))
            if key == kaggle.dataset:
                return self.reply(302, b"", {"Location": f"{kaggle.url}/storage/archive.zip"})
            return self.reply(404, {"code": 404, "message": "Not found"})
        return self.reply(404, {"code": 404, "message": "Not found"})

    def do_GET(self):
        kaggle: KaggleStandIn = self.owner  # type: ignore[assignment]
        if self.path == "/storage/archive.zip":
            return self.reply(200, kaggle.archive.read_bytes(), {"Content-Type": "application/zip"})
        return self.reply(404)


class KaggleStandIn(_Server):
    """Kaggle's API as kagglehub's TEST environment reaches it (localhost:7777)."""

    PORT = 7777

    def __init__(self, archive: Path, handle: str):
        owner, slug, _, version = handle.split("/")
        self.archive, self.dataset = archive, (owner, slug, int(version))
        super().__init__(_KaggleHandler, port=self.PORT, host="localhost")


class _ProxyHandler(_Handler):
    """A forward HTTP proxy: the client sends the absolute URL; the answer is relayed as it is."""

    def do_HEAD(self):
        self.forward()

    def do_GET(self):
        self.forward()

    def do_POST(self):
        self.forward()

    def forward(self) -> None:
        import http.client

        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        conn.request(self.command, url.path + (f"?{url.query}" if url.query else ""), body, headers)
        resp = conn.getresponse()
        data = resp.read()
        relayed = {k: v for k, v in resp.getheaders() if k.lower() not in ("transfer-encoding", "connection")}
        self.reply(resp.status, data, relayed, head=self.command == "HEAD")
        conn.close()


class ProxyStandIn(_Server):
    """A proxy on 127.0.0.1 for HTTP_PROXY/HTTPS_PROXY tests; ``.requests`` holds the absolute URLs."""

    def __init__(self):
        super().__init__(_ProxyHandler)

"""``python -m fsslib.fetch`` end to end against a local HTTP server on 127.0.0.1 that serves fabricated files:
a complete fetch then ``prepare``, a connection dropped mid-file then resumed with a Range request, a wrong
checksum refused with the file removed, an unreachable server and a refusing one, open_clip's weights through
huggingface_hub from a local Hub endpoint. The fabricated files cannot match the official checksums, so each
test gives the catalogue entries it uses the fabricated files' own digests (same algorithm, same kind: full
or prefix); the official values are checked for form only. Nothing here reaches the internet."""
from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_paper_tier_cli import fabricate_coco, fabricate_pascal  # the official archives' formats (imports torch)

from fsslib import fetch
from fsslib.clip.loading import find_cached_weights
from fsslib.data.benchmarks import get_benchmark
from fsslib.fetch import Checksum, HubWeights, RemoteFile

pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # pycocotools, numpy 2
              pytest.mark.budget(3)]  # seconds on 2 busy cores; network timeouts are short, so a hang fails fast too

# ----------------------------------------------------------------------------------------------- the server

class Served:
    """What the server serves and what it saw: ``files`` by name (a mirror folder), ``hub`` by (repo, file),
    ``drop_after[name]`` bytes after which the next response for it breaks off, ``refuse`` names answered 403."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hub: dict[tuple[str, str], tuple[bytes, str]] = {}  # (repo id, file) -> (content, etag)
        self.drop_after: dict[str, int] = {}
        self.refuse: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)


class Handler(BaseHTTPRequestHandler):
    served: Served

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def do_GET(self) -> None:
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        served = self.served
        served.requests.append((self.command, self.path, self.headers.get("Range")))
        hub = re.fullmatch(r"/(.+)/resolve/[^/]+/(.+)", self.path)
        name = self.path.lstrip("/")
        if hub and (hub.group(1), hub.group(2)) in served.hub:
            content, etag = served.hub[hub.group(1), hub.group(2)]
            extra = {"X-Repo-Commit": "c" * 40, "ETag": f'"{etag}"'}
        elif name in served.files and name not in served.refuse:
            content, extra = served.files[name], {}
        else:
            self.send_response(403 if name in served.refuse else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if wanted:
            start = int(wanted.group(1))
            if start >= len(content):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(content)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        else:
            self.send_response(200)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content) - start))
        self.end_headers()
        if not body:
            return
        cut = served.drop_after.pop(name, None)
        self.wfile.write(content[start:] if cut is None else content[start:cut])
        self.wfile.flush()
        if cut is not None:  # break the connection off mid-file
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("TestHandler", (Handler,), {"served": Served()}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(http_server) -> Served:
    fresh = Served()
    http_server.RequestHandlerClass.served = fresh
    return fresh


@pytest.fixture
def url(http_server) -> str:
    return f"http://127.0.0.1:{http_server.server_port}"


@pytest.fixture
def user(tmp_path, monkeypatch) -> Path:
    """A user whose data, weights and Hugging Face cache live under tmp_path; no waiting between retries."""
    monkeypatch.setenv("FSSLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FSSLIB_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(fetch, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # conftest.py sets it for the rest
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``python -m fsslib.fetch argv`` in this process: (exit code, stdout, stderr)."""
    try:
        fetch.main(["--no-progress", "--timeout", "5", *argv])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def digest(content: bytes, algorithm: str) -> str:
    if algorithm == "git-blob-sha1":
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    return hashlib.new(algorithm, content).hexdigest()


def serve_weights(monkeypatch, served: Served, name: str, content: bytes, *, wrong: bool = False) -> RemoteFile:
    """Serve ``content`` as weights entry ``name``, whose checksum becomes the content's own (same algorithm and
    length as the official one; ``wrong``: another file's)."""
    entry = fetch.WEIGHTS[name]
    assert isinstance(entry, RemoteFile)
    checksum = entry.checksum or Checksum("sha256", "0" * 64, "test")
    value = digest(b"another file" if wrong else content, checksum.algorithm)[:len(checksum.value)]
    patched = replace(entry, checksum=replace(checksum, value=value)) if entry.checksum else entry
    monkeypatch.setitem(fetch.WEIGHTS, name, patched)
    served.files[entry.name] = content
    return patched


def weights_folder(user: Path) -> Path:
    return user / "weights"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ----------------------------------------------------------------------------------------------- datasets

def fabricated_pascal(tmp_path: Path) -> dict[str, bytes]:
    voc, sbd = fabricate_pascal(tmp_path / "made")
    return {voc.name: voc.read_bytes(), sbd.name: sbd.read_bytes()}


def serve_dataset(monkeypatch, served: Served, name: str, archives: dict[str, bytes], wrong: str | None = None) -> None:
    """Serve a dataset's fabricated archives, its checksums set to theirs (``wrong``: that file's to another)."""
    files = []
    for entry in fetch.DATASETS[name].files:
        content = archives[entry.name]
        value = digest(b"another file" if entry.name == wrong else content, entry.checksum.algorithm)
        files.append(replace(entry, checksum=replace(entry.checksum, value=value)))
        served.files[entry.name] = content
    monkeypatch.setitem(fetch.DATASETS, name, fetch.Dataset(name, tuple(files)))


@pytest.mark.budget(8)
def test_pascal_complete_fetch_then_prepare(user, served, url, capsys, monkeypatch):
    serve_dataset(monkeypatch, served, "pascal", fabricated_pascal(user))
    code, out, err = run(capsys, "pascal", "--mirror", url)
    assert code == 0, err
    downloads = user / "data" / "downloads"
    assert leftovers(downloads) == ["VOCtrainval_11-May-2012.tar", "benchmark.tgz"]  # no .part, no temporary file
    assert "md5" in out and "prepared at" in out
    record = (user / "data" / "VOCdevkit" / "VOC2012" / "fsslib_prepared.json").read_text()
    assert '"train_list": "pfenet"' in record
    assert get_benchmark("pascal").fold_classes(0)  # the prepared tree loads
    served.requests.clear()
    code, out, _ = run(capsys, "pascal", "--mirror", url)  # again: checked on disk, nothing downloaded or prepared
    assert code == 0 and not served.requests
    assert out.count("already at") == 2 and "already prepared" in out


@pytest.mark.budget(8)
def test_coco_fetch_unzips_then_prepares(user, served, url, capsys, monkeypatch):
    folder = fabricate_coco(user / "made" / "coco")
    archives = {}
    for zip_name, members in (("train2014.zip", ["train2014"]), ("val2014.zip", ["val2014"]),
                              ("annotations_trainval2014.zip", ["annotations"])):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as handle:
            for member in members:
                for path in sorted((folder / member).rglob("*")):
                    handle.write(path, path.relative_to(folder).as_posix())
        archives[zip_name] = buffer.getvalue()
    serve_dataset(monkeypatch, served, "coco", archives)
    code, out, err = run(capsys, "coco", "--mirror", url)
    assert code == 0, err
    unzipped = user / "data" / "downloads" / fetch.COCO_FOLDER
    assert {"train2014", "val2014", "annotations"} <= set(leftovers(unzipped))
    assert (user / "data" / "coco" / "fsslib_prepared.json").is_file()
    for archive in archives:  # the zips may go once unzipped: fetch remembers
        (user / "data" / "downloads" / archive).unlink()
    served.requests.clear()
    code, out, _ = run(capsys, "coco", "--mirror", url)
    assert code == 0 and out.count("already unzipped whole") == 3 and "already prepared" in out and not served.requests


# ----------------------------------------------------------------------------------------------- the transfer

def test_a_connection_dropped_mid_file_is_resumed(user, served, url, capsys, monkeypatch):
    content = os.urandom(300_000)
    serve_weights(monkeypatch, served, "resnet50", content)  # torchvision's sha256 prefix, checked by fsslib
    target = weights_folder(user) / "resnet50-0676ba61.pth"
    served.drop_after[target.name] = 150_000
    code, _, err = run(capsys, "weights", "resnet50", "--mirror", url, "--retries", "0")
    assert code == 2 and "broke off" in err and "resumes" in err
    part = target.with_name(target.name + ".part")
    kept = 150_000 // fetch.CHUNK * fetch.CHUNK  # the whole reads before the break
    assert part.stat().st_size == kept > 0 and not target.exists()  # a partial file never has the final name
    code, out, err = run(capsys, "weights", "resnet50", "--mirror", url)  # the same command again
    assert code == 0, err
    assert ("GET", f"/{target.name}", f"bytes={kept}-") in served.requests and "resuming" in out
    assert target.read_bytes() == content and leftovers(target.parent) == [target.name]


def test_a_dropped_connection_is_retried_within_one_run(user, served, url, capsys, monkeypatch):
    content = os.urandom(200_000)
    serve_weights(monkeypatch, served, "moco-v2", content)  # MoCo's md5 prefix
    served.drop_after["moco_v2_800ep_pretrain.pth.tar"] = 150_000
    code, out, err = run(capsys, "weights", "moco-v2", "--mirror", url, "--retries", "1")
    assert code == 0, err
    assert "Retrying" in out and served.requests[-1][2] == f"bytes={150_000 // fetch.CHUNK * fetch.CHUNK}-"
    assert (weights_folder(user) / "moco_v2_800ep_pretrain.pth.tar").read_bytes() == content


@pytest.mark.parametrize("name", ["pascal", "resnet50", "clip-dinoiser-heads"])  # pooch's md5; a prefix; git's id
def test_a_wrong_checksum_is_refused_and_the_file_removed(user, served, url, capsys, monkeypatch, name):
    if name == "pascal":
        serve_dataset(monkeypatch, served, "pascal", fabricated_pascal(user), wrong="benchmark.tgz")
        folder, refused = user / "data" / "downloads", "benchmark.tgz"
    else:
        entry = serve_weights(monkeypatch, served, name, os.urandom(50_000), wrong=True)
        folder, refused = weights_folder(user) / entry.subfolder, entry.name
    code, _, err = run(capsys, *(["pascal"] if name == "pascal" else ["weights", name]), "--mirror", url)
    assert code == 2 and f"The download of {refused} does not match its" in err and "has been removed" in err
    assert refused not in leftovers(folder) and not [p for p in leftovers(folder) if p.endswith(".part")]
    assert not (user / "data" / "VOCdevkit").exists()  # nothing prepared from a refused archive


def test_an_existing_file_that_does_not_match_is_downloaded_again(user, served, url, capsys, monkeypatch):
    content = os.urandom(10_000)
    serve_weights(monkeypatch, served, "found-decoder", content)
    target = weights_folder(user) / "decoder_weights.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"a truncated copy")
    code, out, _ = run(capsys, "weights", "found-decoder", "--mirror", url)
    assert code == 0 and "downloading it again" in out and target.read_bytes() == content


def test_each_file_has_its_progress_bar(user, served, url, capsys, monkeypatch):
    serve_weights(monkeypatch, served, "found-decoder", os.urandom(3_000))
    fetch.main(["weights", "found-decoder", "--mirror", url])  # progress bars on (run() turns them off)
    err = capsys.readouterr().err
    assert "decoder_weights.pt: 100%" in err


def test_an_unreachable_server_names_the_file_and_the_manual_route(user, capsys, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run(capsys, "pascal", "--mirror", f"http://127.0.0.1:{port}", "--retries", "0")
    assert code == 2
    assert "Could not reach 127.0.0.1" in err and "VOCtrainval_11-May-2012.tar" in err and "benchmark.tgz" in err
    assert "docs/paper_tier.md, 'Datasets'" in err and "host.robots.ox.ac.uk" in err and "offline" in err


def test_a_refusing_server_names_the_file_and_the_manual_route(user, served, url, capsys, monkeypatch):
    serve_weights(monkeypatch, served, "resnet50", b"weights")
    served.refuse.add("resnet50-0676ba61.pth")
    code, _, err = run(capsys, "weights", "resnet50", "--mirror", url)
    assert code == 2 and "refused resnet50-0676ba61.pth (HTTP 403" in err and "docs/paper_tier.md, 'Weights'" in err
    assert len(served.requests) == 1  # a refusal is not retried


def test_files_without_a_published_checksum_need_accept_unverified(user, served, url, capsys, monkeypatch):
    content = os.urandom(5_000)
    serve_weights(monkeypatch, served, "dino_vitb16", content)
    code, _, err = run(capsys, "weights", "dino_vitb16", "--mirror", url)
    assert code == 2 and "no published checksum" in err and "--accept-unverified" in err and not served.requests
    code, out, _ = run(capsys, "weights", "dino_vitb16", "--mirror", url, "--accept-unverified")
    assert code == 0 and hashlib.sha256(content).hexdigest() in out
    code, out, _ = run(capsys, "weights", "dino_vitb16")  # once there (or put there by hand), it is taken
    assert code == 0 and "already at" in out
    code, _, err = run(capsys, "weights", "resnet50-deepstem")  # no direct download anywhere
    assert code == 2 and "no direct download" in err and "dvlab-research/PFENet" in err
    assert str(weights_folder(user) / "resnet50_v2.pth") in err


# ----------------------------------------------------------------------------------------------- open_clip's weights

def test_open_clip_weights_come_through_huggingface_hub_into_the_cache_load_clip_reads(user, served, url, capsys):
    content = os.urandom(40_000)
    served.hub["timm/resnet50_clip.openai", "open_clip_model.safetensors"] = (content, hashlib.sha256(content).hexdigest())
    code, out, err = run(capsys, "weights", "RN50/openai", "--hf-endpoint", url)
    assert code == 0, err
    found = find_cached_weights("RN50", "openai")
    assert found is not None and found.read_bytes() == content and "the Hub's sha256 matches" in out
    assert str(user / "hf") in str(found)
    code, out, _ = run(capsys, "weights", "RN50/openai", "--hf-endpoint", url)
    assert code == 0 and "already at" in out


def test_open_clip_weights_that_do_not_match_the_hubs_sha256_are_removed(user, served, url, capsys):
    served.hub["timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors"] = (b"weights", "f" * 64)
    code, _, err = run(capsys, "weights", "ViT-B-16/openai", "--hf-endpoint", url)
    assert code == 2 and "does not match the sha256 the Hub records" in err
    assert find_cached_weights("ViT-B-16", "openai") is None
    served.hub["timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors"] = (
        b"weights", hashlib.sha256(b"weights").hexdigest())
    code, _, err = run(capsys, "weights", "ViT-B-16/openai", "--hf-endpoint", url)  # the same command again
    assert code == 0, err
    assert find_cached_weights("ViT-B-16", "openai").read_bytes() == b"weights"


def test_an_unreachable_hub_names_the_file_and_the_manual_route(user, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run(capsys, "weights", "ViT-B-16/laion2b_s34b_b88k", "--hf-endpoint", f"http://127.0.0.1:{port}")
    assert code == 2 and "laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in err and "docs/paper_tier.md, 'Weights'" in err


def test_hf_hub_offline_is_respected_and_named(user, capsys, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    code, _, err = run(capsys, "weights", "ViT-B-16/openai")
    assert code == 2 and "HF_HUB_OFFLINE" in err and "HF_HUB_OFFLINE=0 python -m fsslib.fetch" in err


# ----------------------------------------------------------------------------------------------- the command line

def test_all_for_a_method_plans_its_benchmark_and_weights():
    def plan(*argv: str) -> list[tuple[str, str]]:
        return fetch.plan(fetch.build_parser().parse_intermixed_args(argv))

    assert plan("--all-for", "piclip") == [
        ("dataset", "pascal"), ("weights", "resnet50-deepstem"), ("weights", "ViT-B-16/openai")]
    assert plan("--all-for", "lfss", "--benchmark", "all")[:2] == [("dataset", "pascal"), ("dataset", "coco")]
    assert plan("weights", "--method", "clip-dinoiser", "dino_vitb16") == [
        ("weights", "ViT-B-16/laion2b_s34b_b88k"), ("weights", "clip-dinoiser-heads"), ("weights", "dino_vitb16")]
    assert plan("pascal", "coco", "pascal") == [("dataset", "pascal"), ("dataset", "coco")]


@pytest.mark.parametrize("argv, message", [
    (["imagenet"], "Unknown dataset 'imagenet'"),
    (["weights", "resnet51"], "Unknown weights 'resnet51'"),
    (["weights", "--method", "hsnet"], "Unknown method 'hsnet'"),
    (["--all-for", "piclip", "pascal"], "--all-for fetches a method's data and weights"),
    (["weights"], "`weights` needs names or --method"),
    ([], "Nothing to fetch"),
])
def test_bad_input_gets_a_message_with_the_fix(user, capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and "How to fix" in err


def test_the_module_runs_as_a_command_without_importing_torch():
    """``python -m fsslib.fetch`` starts in a fraction of a second: torch and open_clip only load for their weights."""
    import subprocess
    import sys

    code = ("import runpy, sys; sys.argv = ['fsslib.fetch', '--list']; runpy.run_module('fsslib.fetch', "
            "run_name='__main__'); assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "resnet50-0676ba61.pth" in done.stdout


def test_list_names_every_file_and_its_checksum_source(capsys):
    code, out, _ = run(capsys, "--list")
    assert code == 0
    for name in [*fetch.DATASETS, *fetch.WEIGHTS, *fetch.METHOD_WEIGHTS]:
        assert name in out
    assert "torchvision" in out and "TensorFlow Datasets" in out and "needs --accept-unverified" in out


def test_the_catalogue_holds_official_sources_and_well_formed_checksums():
    entries = [entry for dataset in fetch.DATASETS.values() for entry in dataset.files]
    entries += [entry for entry in fetch.WEIGHTS.values() if isinstance(entry, RemoteFile)]
    for entry in entries:
        assert entry.url is None or entry.url.startswith(("http://", "https://")) and entry.url.endswith(entry.name)
        if entry.checksum is not None:
            full = Checksum.FULL_LENGTH[entry.checksum.algorithm]
            assert re.fullmatch(f"[0-9a-f]{{8,{full}}}", entry.checksum.value), entry.name
    voc, sbd = fetch.DATASETS["pascal"].files
    assert voc.checksum.value == "6cd6e144f989b92b3379bac3b3de84fd" and sbd.checksum.value == "82b4d87ceb2ed10f6038a1cba92111cb"
    from fsslib.models.backbones import DEEP_STEM_FILE, RESNET50_FILE, RESNET50_URL
    from fsslib.models.vit import PAPER_DINO
    from fsslib.pretrain.toy_found.train import FOUND_RELEASE_FILE

    # the files land under the names the loaders read
    assert fetch.WEIGHTS["resnet50"].name == RESNET50_FILE and fetch.WEIGHTS["resnet50"].url == RESNET50_URL
    assert fetch.WEIGHTS["resnet50"].checksum.value == RESNET50_FILE.split("-")[1].split(".")[0]
    assert fetch.WEIGHTS["resnet50-deepstem"].name == DEEP_STEM_FILE
    assert {name: fetch.WEIGHTS[name].name for name in PAPER_DINO} == {name: f for name, (f, _) in PAPER_DINO.items()}
    assert fetch.WEIGHTS["found-decoder"].name == FOUND_RELEASE_FILE


@pytest.mark.budget(8)
def test_method_table_matches_the_paper_presets():
    """``weights --method M`` fetches the CLIP and backbone that ``--preset paper`` of M reads."""
    from fsslib.config import make_config
    from fsslib.methods import METHODS, method_options_type

    assert set(fetch.METHOD_WEIGHTS) == set(METHODS)
    builds_a_backbone = {"prototype", "pfenet", "piclip", "lfss", "qgnet", "bam", "hdmnet", "piclip-bam", "piclip-hdmnet"}
    # (the methods on BAM's base learner: it is fine-tuned from the backbone)
    for method, names in fetch.METHOD_WEIGHTS.items():
        cfg = make_config(method, "paper")
        options = method_options_type(method).parse(cfg.options)
        wanted = {cfg.backbone} if method in builds_a_backbone else set()
        if getattr(options, "clip_pretrained", None):
            wanted.add(f"{options.clip}/{options.clip_pretrained}")
        assert wanted == {name for name in names if name in fetch.WEIGHTS and not name.startswith("clip-dinoiser")}, method
        for name in names:
            assert isinstance(fetch.resolve_weights(name), (RemoteFile, HubWeights))


def test_a_relative_base_learner_file_is_read_from_the_folder_the_run_executes_in(tmp_path):
    """A grid's runs execute in the notebook's folder: ``options: {base_learner: ../x.pt}`` names a file beside it,
    which the plan finds there (not in the working directory)."""
    from fsslib.config import make_config

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "x.pt").write_bytes(b"")
    cfg = make_config(method="bam", options={"base_learner": "../x.pt"})
    (need,) = [n for n in fetch.run_needs(cfg, tmp_path / "notebooks") if n.name.startswith("base learner")]
    assert need.present and need.looked_at == (str(tmp_path / "x.pt"),)

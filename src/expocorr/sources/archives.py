"""Safe extraction of zip and tar archives: no absolute paths, no `..`, no links out, no bombs.

Sizes are judged from what the archive declares, before the data it declares is written (or, for a
tar, decompressed past): the running total of the members' uncompressed sizes may not exceed
``data.max_archive_bytes`` (when set) nor the space free where the archive is extracted, and no zip
member, nor the whole archive, may expand more than ``data.max_compression_ratio`` times (members and
archives declaring at most ``RATIO_FLOOR`` bytes excepted: they cannot fill a disk). Zip members cannot
write more than they declare (zipfile stops there and checks the CRC), nor tar members (tarfile copies
exactly the declared size).
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from expocorr.errors import UserError, printable
from expocorr.atomic import atomic_dir


# Zip offsets are 32-bit unless an archive carries ZIP64 records.
ZIP_WRAP = 1 << 32
LOCAL_HEADER = b"PK\x03\x04"
RATIO_FLOOR = 1 << 20


class ArchiveError(UserError, ValueError):
    """An archive that is refused or unreadable; the message names the archive and member."""


def _check_name(archive: Path, name: str) -> None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{printable(archive)}: refused: member {name!r} has an absolute path")
    if ".." in posix.parts:
        raise ArchiveError(f"{printable(archive)}: refused: member {name!r} leaves the target folder ('..')")


class Sizes:
    """The running total of an archive's declared uncompressed bytes, checked against the limits."""

    def __init__(self, archive: Path, target: Path, max_bytes: int | None, max_ratio: float) -> None:
        self.archive, self.target, self.max_bytes, self.max_ratio = archive, target, max_bytes, max_ratio
        self.packed = archive.stat().st_size
        self.free = shutil.disk_usage(target).free
        self.total = 0

    def add(self, name: str, size: int, packed: int | None = None) -> None:
        """Count member `name` declaring `size` bytes (`packed` compressed, where the format says)."""
        self.total += size
        where = f"{printable(self.archive)}: refused: member {name!r}"
        so_far = f"brings the declared uncompressed size to {self.total} bytes"
        if self.max_bytes is not None and self.total > self.max_bytes:
            raise ArchiveError(f"{where} {so_far}, more than data.max_archive_bytes = {self.max_bytes} "
                               "(a decompression bomb?)")
        if self.total > self.free:
            raise ArchiveError(f"{where} {so_far}, more than the {self.free} bytes free on the disk of "
                               f"{printable(self.target.parent)}")
        if packed is not None and size > max(RATIO_FLOOR, self.max_ratio * packed):
            raise ArchiveError(f"{where} expands {size / max(packed, 1):.0f}:1 ({size} bytes from {packed}), "
                               f"more than data.max_compression_ratio = {self.max_ratio} (a decompression bomb?)")
        if self.total > max(RATIO_FLOOR, self.max_ratio * self.packed):
            raise ArchiveError(f"{where} {so_far}, {self.total / max(self.packed, 1):.0f} times the archive's "
                               f"{self.packed} bytes, more than data.max_compression_ratio = {self.max_ratio} "
                               "(a decompression bomb?)")


def _unwrap_offsets(zf: zipfile.ZipFile, archive: Path) -> None:
    """Give each member of a zip over 4 GiB written without ZIP64 records its true offset.

    Such archives (the HDR Photographic Survey's 14 GB HDRPS_Raws.zip is one) store every offset
    modulo 2**32. zipfile still finds the central directory at the end, but takes its wrapped offset
    for data prepended to the archive and shifts every member by that. Members lie in central-directory
    order, so each true offset is the first one congruent to the stored offset, past the previous
    member, that holds a local file header. Archives whose members all start at a local header are
    left as they are.
    """
    fp = zf.fp

    def is_header(offset: int) -> bool:
        fp.seek(offset)
        return fp.read(4) == LOCAL_HEADER

    if archive.stat().st_size <= ZIP_WRAP or all(is_header(i.header_offset) for i in zf.filelist):
        return
    position = 0
    for info in zf.filelist:
        offset = info.header_offset % ZIP_WRAP
        while offset < position:
            offset += ZIP_WRAP
        while offset < zf.start_dir and not is_header(offset):
            offset += ZIP_WRAP
        if offset >= zf.start_dir:
            raise ArchiveError(f"{printable(archive)}: corrupt archive: no local header for member {info.filename!r}")
        info.header_offset = offset
        position = offset + len(LOCAL_HEADER) + info.compress_size
    if hasattr(zf.filelist[0], "_end_offset"):  # Python >= 3.12 bounds each member by the next one's start
        end = zf.start_dir
        for info in sorted(zf.filelist, key=lambda i: i.header_offset, reverse=True):
            info._end_offset, end = end, info.header_offset


def _extract_zip(archive: Path, target: Path, sizes: Sizes) -> None:
    with zipfile.ZipFile(archive) as zf:
        _unwrap_offsets(zf, archive)
        members = zf.infolist()
        for info in members:
            _check_name(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ArchiveError(f"{printable(archive)}: refused: member {info.filename!r} is a symbolic link")
        for info in members:
            sizes.add(info.filename, info.file_size, info.compress_size)
        for info in members:
            out = target / info.filename
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _extract_tar(archive: Path, target: Path, sizes: Sizes) -> None:
    with tarfile.open(archive) as tf:
        members = []
        for m in tf:  # member by member: a bomb is refused before the stream is decompressed past it
            members.append(m)
            _check_name(archive, m.name)
            if m.issym() or m.islnk():
                link = PurePosixPath(m.name).parent / m.linkname if m.issym() else PurePosixPath(m.linkname)
                if PurePosixPath(m.linkname).is_absolute() or ".." in _normalised(link).parts:
                    raise ArchiveError(
                        f"{printable(archive)}: refused: link {m.name!r} -> {m.linkname!r} points outside the target"
                    )
            elif not (m.isfile() or m.isdir()):
                raise ArchiveError(f"{printable(archive)}: refused: member {m.name!r} is a device or fifo")
            if m.isfile():
                sizes.add(m.name, m.size)
        tf.extractall(target, members=members, filter="data")
    _check_links(archive, target)


def _check_links(archive: Path, target: Path) -> None:
    """Refuse symlinks that, now all are in place, resolve outside `target`.

    The checks above are lexical and tarfile's "data" filter resolves a link when it is written; a
    link can still escape through a link extracted after it (`p -> s/L/../../x`, then `s/L -> ..`).
    """
    root = os.path.realpath(target)
    for dirpath, dirnames, filenames in os.walk(target):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and os.path.commonpath([root, os.path.realpath(path)]) != root:
                member = Path(path).relative_to(target).as_posix()
                raise ArchiveError(
                    f"{printable(archive)}: refused: link {member!r} -> {os.readlink(path)!r} "
                    "resolves outside the target"
                )


def _normalised(path: PurePosixPath) -> PurePosixPath:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return PurePosixPath("..")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def is_html(path: Path) -> bool:
    """Whether the file starts as an HTML page does (what a cloud drive's share link serves to a script)."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def extract(archive: str | Path, target: str | Path, max_bytes: int | None, max_ratio: float) -> Path:
    """Extract a zip or tar (any compression) into `target`, all or nothing.

    Every member is checked before anything is written; a refused archive leaves `target` untouched.
    `max_bytes` (None: the free space alone) and `max_ratio` bound the declared sizes (see above).
    """
    archive, target = Path(archive), Path(target)
    with atomic_dir(target) as tmp:
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, tmp, Sizes(archive, tmp, max_bytes, max_ratio))
            elif tarfile.is_tarfile(archive):
                _extract_tar(archive, tmp, Sizes(archive, tmp, max_bytes, max_ratio))
            elif is_html(archive):
                raise ArchiveError(f"{printable(archive)}: a web page (HTML), not a zip or tar archive: a share link "
                                   "that needs a browser? Download the file there and give its local path")
            else:
                raise ArchiveError(f"{printable(archive)}: not a zip or tar archive")
        except tarfile.FilterError as exc:  # tarfile's own "data" filter: e.g. a link through another link
            raise ArchiveError(f"{printable(archive)}: refused: member {exc.tarinfo.name!r}: {exc}") from None
        except RuntimeError as exc:  # zipfile: encrypted members, methods Python lacks (Deflate64: NotImplementedError)
            raise ArchiveError(f"{printable(archive)}: unsupported archive: {exc}") from None
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise ArchiveError(f"{printable(archive)}: corrupt archive: {exc}") from None
    return target

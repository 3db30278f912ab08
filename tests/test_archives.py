"""Safe archive extraction: refused members, decompression bombs, free space, corrupt archives, good archives."""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import stat
import struct
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import workspace
from expocorr.sources.archives import RATIO_FLOOR, ArchiveError, extract

BIG = 10**12  # a max_bytes no test archive reaches
RATIO = 100  # data.max_compression_ratio's default
PHOTO_BYTES = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()  # incompressible


# ----------------------------------------------------------------------------- helpers


def tree(root: Path) -> dict[str, tuple]:
    """Everything under `root` (hidden entries included, links not followed): path -> what it is."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(mode):
                out[rel] = ("dir",)
            elif stat.S_ISREG(mode):
                out[rel] = ("file", path.read_bytes())
            else:
                out[rel] = ("special", stat.S_IFMT(mode))
    return out


def zip_bytes(members: list, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of (name, data) pairs or (ZipInfo, data) pairs."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> bytes:
    """A tar of (name, data) regular files and ready-made TarInfo entries (links, dirs, devices)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info


@pytest.fixture
def box(tmp_path):
    """tmp/outer/target (with earlier content) next to tmp/outer/sibling.txt; archives in tmp/archives."""
    outer = tmp_path / "outer"
    target = outer / "target"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("earlier content")
    (target / "sub").mkdir()
    (target / "sub" / "old.bin").write_bytes(b"\x00\x01")
    (outer / "sibling.txt").write_text("next to the target")
    archives = tmp_path / "archives"
    archives.mkdir()

    def write(name: str, data: bytes) -> Path:
        path = archives / name
        path.write_bytes(data)
        return path

    return SimpleNamespace(root=tmp_path, outer=outer, target=target, write=write)


def refuse(box, archive: Path, max_bytes: int | None = BIG, max_ratio: float = RATIO) -> str:
    """Extract `archive`, expecting ArchiveError; nothing anywhere may change. Returns the message."""
    before = tree(box.root)
    with pytest.raises(ArchiveError) as err:
        extract(archive, box.target, max_bytes, max_ratio)
    assert tree(box.root) == before  # target untouched, nothing written next to it or elsewhere
    message = str(err.value)
    assert message.startswith(f"{archive}: ")
    return message


# ----------------------------------------------------------------------------- zip: refused members


@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../evil.txt", "leaves the target folder ('..')"),
        ("photos/../../evil.txt", "leaves the target folder ('..')"),
        ("..\\evil.txt", "leaves the target folder ('..')"),
        ("/ABSOLUTE/evil.txt", "has an absolute path"),
        ("C:/evil.txt", "has an absolute path"),
        ("\\evil.txt", "has an absolute path"),
    ],
)
def test_zip_member_outside_the_target_is_refused(box, member, why):
    member = member.replace("/ABSOLUTE", str(box.root))  # an absolute path we can watch
    archive = box.write("evil.zip", zip_bytes([("good.txt", b"fine"), (member, b"pwned")]))
    assert refuse(box, archive) == f"{archive}: refused: member {member!r} {why}"
    assert not (box.root / "evil.txt").exists()


def test_zip_symlink_member_is_refused(box):
    archive = box.write("link.zip", zip_bytes([("good.txt", b"fine"), zip_symlink("passwd", "../../etc/passwd")]))
    assert refuse(box, archive) == f"{archive}: refused: member 'passwd' is a symbolic link"


def test_zip_symlink_member_is_refused_even_pointing_inside(box):
    archive = box.write("link.zip", zip_bytes([("good.txt", b"fine"), zip_symlink("alias.txt", "good.txt")]))
    assert refuse(box, archive) == f"{archive}: refused: member 'alias.txt' is a symbolic link"


# ----------------------------------------------------------------------------- tar: refused members


@pytest.mark.parametrize("mode", ["w", "w:gz"])
@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../evil.txt", "leaves the target folder ('..')"),
        ("photos/../../evil.txt", "leaves the target folder ('..')"),
        ("/ABSOLUTE/evil.txt", "has an absolute path"),
    ],
)
def test_tar_member_outside_the_target_is_refused(box, mode, member, why):
    member = member.replace("/ABSOLUTE", str(box.root))
    archive = box.write("evil.tar", tar_bytes([("good.txt", b"fine"), (member, b"pwned")], mode))
    assert refuse(box, archive) == f"{archive}: refused: member {member!r} {why}"
    assert not (box.root / "evil.txt").exists()


@pytest.mark.parametrize(
    ("name", "kind", "linkname"),
    [
        ("link", tarfile.SYMTYPE, "../../etc/passwd"),
        ("photos/link", tarfile.SYMTYPE, "../../outer/sibling.txt"),
        ("link", tarfile.SYMTYPE, "/etc/passwd"),
        ("link", tarfile.SYMTYPE, ".."),
        ("hard", tarfile.LNKTYPE, "../sibling.txt"),
        ("hard", tarfile.LNKTYPE, "/etc/passwd"),
    ],
)
def test_tar_link_pointing_outside_is_refused(box, name, kind, linkname):
    members = [("photos/good.txt", b"fine"), tar_entry(name, kind, linkname)]
    archive = box.write("links.tar", tar_bytes(members))
    message = refuse(box, archive)
    assert message == f"{archive}: refused: link {name!r} -> {linkname!r} points outside the target"


def test_tar_link_escaping_through_another_link_is_refused(box):
    """`b -> .` then `a -> b/..`: lexically inside, really the target's parent; then a write through `a`."""
    members = [
        tar_entry("b", tarfile.SYMTYPE, "."),
        tar_entry("a", tarfile.SYMTYPE, "b/.."),
        ("a/evil.txt", b"pwned"),
    ]
    archive = box.write("chain.tar", tar_bytes(members))
    message = refuse(box, archive)
    assert message.startswith(f"{archive}: refused: member 'a': ")
    assert "outside the destination" in message
    assert not (box.outer / "evil.txt").exists()


def test_tar_link_escaping_through_a_link_extracted_after_it_is_refused(box):
    """`p -> s/L/../../secret` is lexically inside and, when written, `s/L` does not exist yet;
    once `s/L -> ..` is in place, `p` resolves to the target's parent folder."""
    (box.outer / "secret.jpg").write_bytes(PHOTO_BYTES)
    members = [
        tar_entry("p.jpg", tarfile.SYMTYPE, "s/L/../../secret.jpg"),
        tar_entry("s", tarfile.DIRTYPE),
        tar_entry("s/L", tarfile.SYMTYPE, ".."),
    ]
    archive = box.write("late.tar", tar_bytes(members))
    assert refuse(box, archive) == (
        f"{archive}: refused: link 'p.jpg' -> 's/L/../../secret.jpg' resolves outside the target"
    )


def test_tar_circular_links_inside_are_not_an_escape(box):
    members = [tar_entry("a", tarfile.SYMTYPE, "b"), tar_entry("b", tarfile.SYMTYPE, "a"), ("c.txt", b"c")]
    archive = box.write("loop.tar", tar_bytes(members))
    extract(archive, box.target, BIG, RATIO)
    assert tree(box.target) == {"a": ("link", "b"), "b": ("link", "a"), "c.txt": ("file", b"c")}


@pytest.mark.parametrize(
    ("kind", "label"), [(tarfile.FIFOTYPE, "fifo"), (tarfile.CHRTYPE, "chr"), (tarfile.BLKTYPE, "blk")]
)
def test_tar_device_or_fifo_member_is_refused(box, kind, label):
    archive = box.write(f"{label}.tar", tar_bytes([("good.txt", b"fine"), tar_entry("dev/node", kind)]))
    assert refuse(box, archive) == f"{archive}: refused: member 'dev/node' is a device or fifo"


# ----------------------------------------------------------------------------- decompression bombs


def test_zip_bomb_declaring_more_than_max_bytes_is_refused(box):
    """A real zip: 50 MB of zeros compress to ~50 kB."""
    size = 50 * 2**20
    archive = box.write("bomb.zip", zip_bytes([("small.txt", b"x"), ("zeros.bin", bytes(size))]))
    assert archive.stat().st_size < 200_000
    assert refuse(box, archive, max_bytes=10_000_000) == (
        f"{archive}: refused: member 'zeros.bin' brings the declared uncompressed size to {size + 1} bytes, "
        f"more than data.max_archive_bytes = 10000000 (a decompression bomb?)"
    )


def test_tar_gz_bomb_declaring_more_than_max_bytes_is_refused(box):
    size = 50 * 2**20
    archive = box.write("bomb.tar.gz", tar_bytes([("a.bin", bytes(size // 2)), ("b.bin", bytes(size // 2))], "w:gz"))
    assert archive.stat().st_size < 200_000
    message = refuse(box, archive, max_bytes=size - 1, max_ratio=10**6)
    assert message == (
        f"{archive}: refused: member 'b.bin' brings the declared uncompressed size to {size} bytes, "
        f"more than data.max_archive_bytes = {size - 1} (a decompression bomb?)"
    )


def _patch_zip_sizes(data: bytes, file_size: int) -> bytes:
    """Rewrite the declared uncompressed size of the zip's only member (local and central headers)."""
    out = bytearray(data)
    local = out.find(b"PK\x03\x04")
    central = out.find(b"PK\x01\x02")
    assert local >= 0 and central > local
    struct.pack_into("<I", out, local + 22, file_size)
    struct.pack_into("<I", out, central + 24, file_size)
    return bytes(out)


def test_zip_with_a_forged_huge_declared_size_is_refused(box):
    forged = _patch_zip_sizes(zip_bytes([("photo.jpg", PHOTO_BYTES)]), 0xFFFF0000)
    assert zipfile.ZipFile(io.BytesIO(forged)).getinfo("photo.jpg").file_size == 0xFFFF0000
    archive = box.write("forged.zip", forged)
    assert "the declared uncompressed size to 4294901760 bytes" in refuse(box, archive, max_bytes=10**9)


def test_zip_with_a_forged_small_declared_size_cannot_write_more(box):
    """Declaring 10 bytes for 1 MB of data does not get the 1 MB past max_bytes: the CRC check fails."""
    forged = _patch_zip_sizes(zip_bytes([("zeros.bin", bytes(2**20))]), 10)
    archive = box.write("liar.zip", forged)
    message = refuse(box, archive, max_bytes=1000)
    assert message.startswith(f"{archive}: corrupt archive: ")
    assert "zeros.bin" in message


def test_declared_size_equal_to_max_bytes_is_accepted(box):
    archive = box.write("exact.zip", zip_bytes([("a.bin", bytes(600)), ("b.bin", bytes(400))]))
    extract(archive, box.target, 1000, RATIO)
    assert tree(box.target) == {"a.bin": ("file", bytes(600)), "b.bin": ("file", bytes(400))}


# ----------------------------------------------------------------------------- compression ratio, free space


def test_zip_of_zeros_expanding_1000_to_1_is_refused_naming_the_member(box):
    """A real zip: 10 MiB of zeros deflate to about 10 kB; refused with no max_archive_bytes set (the default)."""
    size = 10 * 2**20
    archive = box.write("zeros.zip", zip_bytes([("notes.txt", b"fine"), ("zeros.bin", bytes(size))]))
    packed = zipfile.ZipFile(archive).getinfo("zeros.bin").compress_size
    assert size / packed > 1000
    assert refuse(box, archive, max_bytes=None) == (
        f"{archive}: refused: member 'zeros.bin' expands {size / packed:.0f}:1 ({size} bytes from {packed}), "
        f"more than data.max_compression_ratio = 100 (a decompression bomb?)"
    )


def test_zip_of_many_small_members_is_refused_by_its_total_ratio(box):
    """Each member declares under RATIO_FLOOR, so none is judged alone; their running total is."""
    archive = box.write("parts.zip", zip_bytes([(f"part{i:02d}.bin", bytes(RATIO_FLOOR // 2)) for i in range(40)]))
    packed = archive.stat().st_size
    message = refuse(box, archive, max_bytes=None)
    pattern = (rf"{re.escape(str(archive))}: refused: member 'part\d\d\.bin' brings the declared uncompressed size "
               rf"to (\d+) bytes, (\d+) times the archive's {packed} bytes, more than data\.max_compression_ratio "
               rf"= 100 \(a decompression bomb\?\)")
    total = int(re.fullmatch(pattern, message).group(1))
    assert 100 * packed < total <= 100 * packed + RATIO_FLOOR // 2  # refused at the member that crossed the limit


def test_tar_gz_bomb_is_refused_at_its_first_member(box):
    """The tar stream is judged member by member: the second 10 MiB of zeros is never decompressed."""
    size = 10 * 2**20
    archive = box.write("zeros.tar.gz", tar_bytes([("a.bin", bytes(size)), ("b.bin", bytes(size))], "w:gz"))
    packed = archive.stat().st_size
    assert refuse(box, archive, max_bytes=None) == (
        f"{archive}: refused: member 'a.bin' brings the declared uncompressed size to {size} bytes, "
        f"{size / packed:.0f} times the archive's {packed} bytes, more than data.max_compression_ratio = 100 "
        f"(a decompression bomb?)"
    )


def test_compression_ratio_up_to_the_limit_is_accepted(box):
    """4 MiB that deflate about 8:1 (like a flat 16-bit scan): refused under its ratio, accepted at it."""
    data = np.repeat(np.random.default_rng(2).integers(0, 256, 2**18, dtype=np.uint8), 16).tobytes()
    archive = box.write("scan.zip", zip_bytes([("scan.tif", data)]))
    info = zipfile.ZipFile(archive).getinfo("scan.tif")
    ratio = info.file_size / info.compress_size
    assert len(data) > RATIO_FLOOR and 4 < ratio < 20
    assert f"member 'scan.tif' expands {ratio:.0f}:1" in refuse(box, archive, max_ratio=math.floor(ratio))
    extract(archive, box.target, None, math.ceil(ratio))
    assert tree(box.target) == {"scan.tif": ("file", data)}


def sparse_tar(name: str, size: int) -> bytes:
    """A tar whose one member declares `size` bytes, stored as 5 bytes of data and a hole: a GNU sparse
    file (PAX format 0.1, which GNU tar also lists and extracts at that size)."""
    info = tarfile.TarInfo(name)
    info.size = 5
    info.pax_headers = {"GNU.sparse.size": str(size), "GNU.sparse.numblocks": "2",
                        "GNU.sparse.map": f"0,5,{size},0"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(info, io.BytesIO(b"hello"))
    assert tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getmember(name).size == size
    return buf.getvalue()


def test_archive_declaring_more_than_the_free_space_is_refused(box):
    """Checked against the disk the archive is extracted to, before anything is written."""
    size = shutil.disk_usage(box.outer).free + 2**30
    archive = box.write("disk.tar", sparse_tar("disk.img", size))
    assert archive.stat().st_size < 20_000
    message = refuse(box, archive, max_bytes=None)
    pattern = (rf"{re.escape(str(archive))}: refused: member 'disk\.img' brings the declared uncompressed size to "
               rf"{size} bytes, more than the (\d+) bytes free on the disk of {re.escape(str(box.outer))}")
    free = int(re.fullmatch(pattern, message).group(1))
    assert size - 2 * 2**30 < free < size


@pytest.mark.slow
def test_download_refuses_a_1000_to_1_zip_in_one_line(tmp_path):
    """`expocorr download` with the default params (no max_archive_bytes, ratio 100), data.url a file:// zip."""
    bomb = tmp_path / "photos.zip"
    bomb.write_bytes(zip_bytes([("photos/a.png", PHOTO_BYTES), ("photos/zeros.png", bytes(10 * 2**20))]))
    sha256 = hashlib.sha256(bomb.read_bytes()).hexdigest()
    repo = workspace.make(tmp_path, lambda p: p["data"].update(source="url", url=bomb.as_uri(), sha256=sha256))
    out = workspace.run(["expocorr", "download"], repo, check=False)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.search(r"download failed: \S+photos\.zip: refused: member 'photos/zeros\.png' expands \d+:1 "
                     r"\(10485760 bytes from \d+\), more than data\.max_compression_ratio = 100 "
                     r"\(a decompression bomb\?\)$", errors[0]), errors[0]
    cache = repo / "data" / "cache"
    assert [p.suffix for p in cache.iterdir()] == [".zip"]  # the download, nothing extracted beside it
    assert not any((repo / "data" / "downloads").iterdir())


# ----------------------------------------------------------------------------- corrupt archives


def test_random_bytes_named_zip_are_refused(box):
    archive = box.write("photos.zip", np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert refuse(box, archive) == f"{archive}: not a zip or tar archive"


def test_empty_file_is_refused(box):
    archive = box.write("photos.tar.gz", b"")
    assert refuse(box, archive) == f"{archive}: not a zip or tar archive"


def test_missing_archive_is_an_archive_error(box):
    archive = box.root / "archives" / "missing.zip"
    assert "No such file" in refuse(box, archive)


def test_truncated_zip_is_refused(box):
    data = zip_bytes([("a.jpg", PHOTO_BYTES), ("b.jpg", PHOTO_BYTES[::-1])])
    archive = box.write("cut.zip", data[: len(data) // 2])
    assert refuse(box, archive) == f"{archive}: not a zip or tar archive"


def test_truncated_tar_gz_is_refused(box):
    data = tar_bytes([("a.jpg", PHOTO_BYTES), ("b.jpg", PHOTO_BYTES[::-1])], "w:gz")
    archive = box.write("cut.tar.gz", data[: len(data) // 2])
    assert refuse(box, archive).startswith(f"{archive}: corrupt archive: ")


def test_zip_with_corrupt_compressed_data_is_refused(box):
    data = bytearray(zip_bytes([("a.bin", bytes(range(256)) * 400)]))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("a.bin")
    start = info.header_offset + 30 + len("a.bin")
    for i in range(start + 5, start + info.compress_size - 5):  # scramble the deflate stream
        data[i] ^= 0x55
    archive = box.write("scrambled.zip", bytes(data))
    assert refuse(box, archive).startswith(f"{archive}: corrupt archive: ")


def test_tar_xz_with_corrupt_compressed_data_is_refused(box):
    data = bytearray(tar_bytes([("a.jpg", PHOTO_BYTES * 10), ("b.jpg", PHOTO_BYTES[::-1] * 10)], "w:xz"))
    for i in range(len(data) // 2, len(data) // 2 + 200):
        data[i] ^= 0x55
    archive = box.write("scrambled.tar.xz", bytes(data))
    assert refuse(box, archive).startswith(f"{archive}: corrupt archive: ")


def test_encrypted_zip_is_refused(box):
    data = bytearray(zip_bytes([("a.jpg", PHOTO_BYTES)], zipfile.ZIP_STORED))
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit
        at = data.find(signature) + flags_at
        data[at] |= 0x01
    archive = box.write("secret.zip", bytes(data))
    message = refuse(box, archive)
    assert message.startswith(f"{archive}: unsupported archive: ")
    assert "encrypted" in message


def test_zip_with_an_unsupported_compression_method_is_refused(box):
    data = bytearray(zip_bytes([("a.jpg", PHOTO_BYTES)], zipfile.ZIP_STORED))
    for signature, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # method 9: Deflate64
        struct.pack_into("<H", data, data.find(signature) + method_at, 9)
    archive = box.write("deflate64.zip", bytes(data))
    assert refuse(box, archive).startswith(f"{archive}: unsupported archive: ")


# ----------------------------------------------------------------------------- good archives

GOOD_FILES = {
    "photos/beach.jpg": PHOTO_BYTES,
    "photos/2024/june/cat.png": PHOTO_BYTES[::-1],
    "photos/notes.txt": "été, ünïcode\n".encode(),
    "README": b"",
}
GOOD_TREE = {
    "README": ("file", b""),
    "photos": ("dir",),
    "photos/2024": ("dir",),
    "photos/2024/june": ("dir",),
    "photos/2024/june/cat.png": ("file", PHOTO_BYTES[::-1]),
    "photos/beach.jpg": ("file", PHOTO_BYTES),
    "photos/empty": ("dir",),
    "photos/notes.txt": ("file", "été, ünïcode\n".encode()),
}


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_good_tar_extracts_fully_and_replaces_the_target(box, mode):
    members = [tar_entry("photos", tarfile.DIRTYPE), tar_entry("photos/empty", tarfile.DIRTYPE)]
    members += list(GOOD_FILES.items())
    archive = box.write("photos.tar", tar_bytes(members, mode))
    assert extract(archive, box.target, BIG, RATIO) == box.target
    assert tree(box.target) == GOOD_TREE  # earlier content replaced, all or nothing
    assert sorted(os.listdir(box.outer)) == ["sibling.txt", "target"]  # no temporary left


def test_good_zip_extracts_fully_and_replaces_the_target(box):
    members = [("photos/", b""), ("photos/empty/", b"")] + list(GOOD_FILES.items())
    archive = box.write("photos.zip", zip_bytes(members))
    assert extract(str(archive), str(box.target), BIG, RATIO) == box.target
    assert tree(box.target) == GOOD_TREE
    assert sorted(os.listdir(box.outer)) == ["sibling.txt", "target"]


def test_zip_with_stored_members_and_no_folder_entries(box):
    archive = box.write("flat.zip", zip_bytes(list(GOOD_FILES.items()), zipfile.ZIP_STORED))
    extract(archive, box.target, BIG, RATIO)
    assert tree(box.target) == {k: v for k, v in GOOD_TREE.items() if k != "photos/empty"}


def test_tar_links_inside_the_target_are_kept(box):
    members = [
        ("photos/beach.jpg", PHOTO_BYTES),
        tar_entry("photos/latest.jpg", tarfile.SYMTYPE, "beach.jpg"),
        tar_entry("top.jpg", tarfile.SYMTYPE, "photos/beach.jpg"),
        tar_entry("copy.jpg", tarfile.LNKTYPE, "photos/beach.jpg"),
    ]
    archive = box.write("links.tar.gz", tar_bytes(members, "w:gz"))
    extract(archive, box.target, BIG, RATIO)
    assert tree(box.target) == {
        "copy.jpg": ("file", PHOTO_BYTES),
        "photos": ("dir",),
        "photos/beach.jpg": ("file", PHOTO_BYTES),
        "photos/latest.jpg": ("link", "beach.jpg"),
        "top.jpg": ("link", "photos/beach.jpg"),
    }
    assert (box.target / "photos" / "latest.jpg").read_bytes() == PHOTO_BYTES


def test_target_parent_is_created(box):
    archive = box.write("photos.zip", zip_bytes([("a.txt", b"a")]))
    target = box.root / "new" / "deeper" / "target"
    assert extract(archive, target, BIG, RATIO) == target
    assert tree(target) == {"a.txt": ("file", b"a")}


def wrap_offsets(data: bytes, modulus: int) -> bytes:
    """The zip `data` as an archive written without ZIP64 records would store it were `modulus` 2**32:
    every local-header offset and the central directory's offset reduced modulo `modulus`."""
    out = bytearray(data)
    eocd = out.rindex(b"PK\x05\x06")
    entries, cd_offset = struct.unpack_from("<H4xL", out, eocd + 10)
    struct.pack_into("<L", out, eocd + 16, cd_offset % modulus)
    position = cd_offset
    for _ in range(entries):
        assert out[position:position + 4] == b"PK\x01\x02"
        names = struct.unpack_from("<3H", out, position + 28)
        header = struct.unpack_from("<L", out, position + 42)[0]
        struct.pack_into("<L", out, position + 42, header % modulus)
        position += 46 + sum(names)
    return bytes(out)


def test_zip_over_the_offset_limit_without_zip64_records_extracts(box, monkeypatch):
    """A zip larger than 2**32 bytes written without ZIP64 (the Fairchild survey's HDRPS_Raws.zip) keeps
    its offsets modulo 2**32; here the limit is lowered to 4 KiB so the archive can be small."""
    monkeypatch.setattr("expocorr.sources.archives.ZIP_WRAP", 4096)
    rng = np.random.default_rng(1)
    files = {f"HDRPS_Raws/Scene{i // 3}/DSC_{i:04d}.NEF": rng.integers(0, 256, int(n), dtype=np.uint8).tobytes()
             for i, n in enumerate(rng.integers(500, 9000, 12))}
    plain = zip_bytes(list(files.items()), zipfile.ZIP_STORED)
    assert len(plain) > 10 * 4096
    wrapped = box.write("HDRPS_Raws.zip", wrap_offsets(plain, 4096))
    with zipfile.ZipFile(wrapped) as zf, pytest.raises(zipfile.BadZipFile):  # what zipfile alone makes of it
        [zf.read(name) for name in files]
    extract(wrapped, box.target, BIG, RATIO)
    assert {k: v for k, v in tree(box.target).items() if v[0] == "file"} == {k: ("file", v) for k, v in files.items()}


def test_zip_with_data_prepended_is_left_as_zipfile_reads_it(box, monkeypatch):
    """A self-extracting-style archive (bytes before the zip) is not mistaken for a wrapped one."""
    monkeypatch.setattr("expocorr.sources.archives.ZIP_WRAP", 4096)
    body = zip_bytes(list(GOOD_FILES.items()), zipfile.ZIP_STORED)
    archive = box.write("sfx.zip", b"#!/bin/sh\n" + bytes(5000) + body)
    extract(archive, box.target, BIG, RATIO)
    assert tree(box.target) == {k: v for k, v in GOOD_TREE.items() if k != "photos/empty"}

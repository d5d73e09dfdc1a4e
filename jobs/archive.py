"""Zip files in and out of a batch: reading an uploaded archive safely, naming and writing results."""

from __future__ import annotations

import io
import json
import re
import stat
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import IO, Any

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
SKIPPED = ("__MACOSX/",)  # what archivers add beside the files
MAX_RATIO = 200  # a deflated image is rarely a tenth of its size; a bomb is a thousandth
MAX_STEM = 100


class ArchiveRejected(ValueError):
    """The archive cannot be taken; the message says why."""


def read_archive(data: bytes, max_items: int, max_bytes: int) -> list[tuple[str, bytes]]:
    """The images in a zip, as (item name, bytes), in the archive's order. An image in a folder is
    named after its path below the folder every image shares (``front/01.jpg`` → ``front-01.jpg``,
    so ``back/01.jpg`` stays apart from it; a zipped folder's own name is left out).

    Refused: anything that is not a zip, an entry whose path leaves the archive's folder (``../x``,
    ``/etc/x``, ``C:\\x``), links, encrypted entries, files that are not images, more than
    ``max_items`` images, and more than ``max_bytes`` once uncompressed (a zip bomb), which is
    checked against what is really read, not what the archive's headers claim.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise ArchiveRejected("archive is not a zip file") from None
    entries = [info for info in archive.infolist() if _wanted(info)]
    if len(entries) > max_items:
        raise ArchiveRejected(f"archive holds {len(entries)} files; at most {max_items} items per batch")
    for info in entries:
        _check_entry(info)
    declared = sum(info.file_size for info in entries)
    if declared > max_bytes:
        raise ArchiveRejected(f"archive unpacks to {declared:,} bytes, over the limit of {max_bytes:,}")
    images, total = [], 0
    for info in entries:
        with archive.open(info) as member:
            content = member.read(max_bytes - total + 1)
        total += len(content)
        if total > max_bytes:
            raise ArchiveRejected(f"archive unpacks to more than {max_bytes:,} bytes (a zip bomb?)")
        images.append(content)
    if not images:
        raise ArchiveRejected("archive holds no images")
    return list(zip(item_names([info.filename for info in entries]), images, strict=True))


def item_names(paths: list[str]) -> list[str]:
    """Each entry's path below the folders all entries share, its folders joined by ``-``."""
    parts = [PurePosixPath(path.replace("\\", "/")).parts for path in paths]
    folders = [path[:-1] for path in parts]
    shared = 0
    while all(len(folder) > shared for folder in folders) and len({folder[shared] for folder in folders}) == 1:
        shared += 1
    return ["-".join(path[shared:]) for path in parts]


def _wanted(info: zipfile.ZipInfo) -> bool:
    name = info.filename
    return not (info.is_dir() or name.startswith(SKIPPED) or PurePosixPath(name).name.startswith("."))


def _check_entry(info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise ArchiveRejected(f"archive entry {name[:80]!r} has a path outside the archive; zip the images alone")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveRejected(f"archive entry {name[:80]!r} is a link; only image files are taken")
    if info.flag_bits & 0x1:
        raise ArchiveRejected(f"archive entry {name[:80]!r} is encrypted")
    if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
        raise ArchiveRejected(f"archive entry {name[:80]!r} is not an image (PNG, JPEG, WebP, BMP, TIFF or GIF)")
    if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
        raise ArchiveRejected(
            f"archive entry {name[:80]!r} is compressed {info.file_size // info.compress_size}:1 (a zip bomb?)"
        )


def safe_stem(name: str | None) -> str:
    """A file name's stem, safe on any file system: no folders, no odd characters."""
    if not name:
        return ""
    base = re.split(r"[\\/]", name)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    stem = re.sub(r"[^\w.-]+", "-", stem, flags=re.UNICODE)
    return re.sub(r"-{2,}", "-", stem).strip(".-_ ")[:MAX_STEM]


def result_names(names: Iterable[str | None], suffix: str = ".png") -> list[str]:
    """One file name per item: its own name's stem (``shoe-01.png``), else ``item-0007.png`` (the
    7th item); repeats get ``-2``, ``-3``, compared without case."""
    used: set[str] = set()
    files = []
    for number, name in enumerate(names, start=1):
        stem = safe_stem(name) or f"item-{number:04d}"
        candidate, repeat = stem, 2
        while candidate.lower() in used:
            candidate, repeat = f"{stem}-{repeat}", repeat + 1
        used.add(candidate.lower())
        files.append(candidate + suffix)
    return files


def write_zip(files: Iterable[tuple[str, bytes]], manifest: dict[str, Any]) -> IO[bytes]:
    """A zip of ``files`` (stored: PNGs are compressed already) and ``manifest.json``, in a temporary
    file (in memory while small), rewound for reading."""
    spool = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # noqa: SIM115 - the caller closes it
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files:
            archive.writestr(name, data)
        archive.writestr("manifest.json", json.dumps(manifest, indent=2), compress_type=zipfile.ZIP_DEFLATED)
    spool.seek(0)
    return spool

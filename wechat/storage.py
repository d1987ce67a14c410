"""Media storage port: where downloaded photos and voice notes live (a local directory by default)."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Protocol

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")

# Magic numbers of the media WeChat sends; the Content-Type header alone is not trusted.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"#!AMR", 0, "audio/amr"),
    (b"Speex   ", 28, "audio/speex"),
    (b"OggS", 0, "audio/ogg"),
    (b"ID3", 0, "audio/mpeg"),
    (b"\xff\xfb", 0, "audio/mpeg"),
)
EXTENSIONS = {
    "image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp", "audio/amr": "amr",
    "audio/speex": "spx", "audio/ogg": "ogg", "audio/mpeg": "mp3",
}


def sniff_type(data: bytes) -> str | None:
    """Return the media type the bytes really are, or None when unknown."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, offset, mime in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return "audio/speex" if mime == "audio/ogg" and b"Speex" in data[:64] else mime
    return None


class InvalidMediaKey(ValueError):
    """A storage key that could escape the storage root or is otherwise malformed."""


class MediaStorage(Protocol):
    """Where media bytes are kept; object storage can implement the same four calls."""

    name: str

    async def save(self, key: str, data: bytes, *, mime: str) -> None:
        """Store the bytes under the key, replacing nothing half-written."""
        ...

    async def read(self, key: str) -> bytes:
        """Return the stored bytes (FileNotFoundError when absent)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the key if present."""
        ...

    async def check(self) -> bool:
        """Tell whether the storage can be written."""
        ...


class DirectoryMediaStorage:
    """Files under a directory (INTAKE_MEDIA_DIR); writes are atomic (temporary file, then rename)."""

    name = "directory"

    def __init__(self, root: Path) -> None:
        """Store under `root` (created on first write)."""
        self.root = root

    def path(self, key: str) -> Path:
        """Return the file of a key, refusing keys that are absolute or climb out of the root."""
        if not _KEY_RE.match(key) or ".." in key.split("/") or len(key) > 255:
            raise InvalidMediaKey(key)
        return self.root / key

    async def save(self, key: str, data: bytes, *, mime: str) -> None:
        """Write the file atomically."""
        await asyncio.to_thread(self._save, self.path(key), data)

    @staticmethod
    def _save(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    async def read(self, key: str) -> bytes:
        """Read the file."""
        return await asyncio.to_thread(self.path(key).read_bytes)

    async def delete(self, key: str) -> None:
        """Remove the file."""
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def check(self) -> bool:
        """The directory exists or can be created, and is writable."""

        def _check() -> bool:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError:
                return False
            return os.access(self.root, os.W_OK)

        return await asyncio.to_thread(_check)

"""Photos uploaded with Open311 requests (multipart extension): sniffed, size-limited, stored under the media dir."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.db import utcnow

URL_PREFIX = "/open311/v2/media/"
SUBDIR = "open311"
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}
MIME_BY_EXT = {ext: mime for mime, ext in EXTENSIONS.items()}
_KEY_RE = re.compile(r"^\d{4}/\d{2}/[0-9a-f]{32}\.(jpg|png|webp|gif)$")


def sniff_photo(data: bytes) -> str | None:
    """Return the image type the bytes really are (the declared Content-Type is not trusted)."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    """A photo written to disk; `url` is the path the API serves it under."""

    key: str
    mime: str
    size: int

    @property
    def url(self) -> str:
        """Path of the photo below the API root."""
        return URL_PREFIX + self.key


def photo_path(media_dir: Path, key: str) -> Path:
    """Return the file of a key, refusing anything that is not a key we generated."""
    if not _KEY_RE.match(key):
        raise ValueError("not a photo key")
    return media_dir / SUBDIR / key


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # readers never see half a photo


async def store_photo(media_dir: Path, data: bytes, mime: str) -> StoredPhoto:
    """Write the bytes atomically under an unguessable name and return where they are."""
    now = utcnow()
    key = f"{now:%Y}/{now:%m}/{uuid.uuid4().hex}.{EXTENSIONS[mime]}"
    await asyncio.to_thread(_write, photo_path(media_dir, key), data)
    return StoredPhoto(key=key, mime=mime, size=len(data))


async def delete_photos(media_dir: Path, photos: list[StoredPhoto]) -> None:
    """Remove photos of a request that was not stored after all."""

    def _delete() -> None:
        for photo in photos:
            photo_path(media_dir, photo.key).unlink(missing_ok=True)

    if photos:
        await asyncio.to_thread(_delete)

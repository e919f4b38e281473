"""The tus 1.0.0 protocol's constants and header parsing (https://tus.io/protocols/resumable-upload).

No maintained Flask server exists (the issue says so; tuspy and tus-js-client are
clients), so the protocol is implemented here: core, creation, creation-with-upload,
expiration, checksum and termination.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timezone
from email.utils import format_datetime

from ..inputs import check_text

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,expiration,checksum,termination"
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
METADATA_KEYS = {"filename", "project", "name", "crs", "scan", "filetype"}


class TusError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_metadata(header: str | None) -> dict[str, str]:
    """`Upload-Metadata: key base64value,key2 base64value2` → dict (values decoded as UTF-8)."""
    result: dict[str, str] = {}
    if not header:
        return result
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, value = pair.partition(" ")
        if not key or key in result:
            raise TusError(400, f"Upload-Metadata has an empty or repeated key {key!r}")
        try:
            text = base64.b64decode(value.strip(), validate=True).decode("utf-8") if value else ""
        except (ValueError, UnicodeDecodeError):
            raise TusError(400, f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text")
        result[key] = check_text(text, f"Upload-Metadata value of {key!r}")    # as all request text (400)
    unknown = set(result) - METADATA_KEYS
    if unknown:
        raise TusError(400, f"unknown Upload-Metadata keys: {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(METADATA_KEYS))}")
    return result


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """`Upload-Checksum: sha1 <base64 digest>` → (algorithm, digest). A header that is no
    whole digest is a 400: 460 is for a chunk whose digest was compared and differs."""
    if not header:
        return None
    algorithm, _, value = header.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise TusError(400, f"checksum algorithm {algorithm!r} is not supported; use {', '.join(CHECKSUMS)}")
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        raise TusError(400, "Upload-Checksum's digest is not base64")
    size = CHECKSUMS[algorithm]().digest_size
    if len(digest) != size:
        raise TusError(400, f"Upload-Checksum needs the chunk's base64 {algorithm} digest ({size} bytes), "
                            f"e.g. `Upload-Checksum: {algorithm} <digest>`; it holds {len(digest)} bytes")
    return algorithm, digest


def parse_int(value: str | None, name: str) -> int:
    if value is None or not value.strip().isdigit():
        raise TusError(400, f"{name} must be a non-negative integer")
    return int(value)


def http_date(dt) -> str:
    return format_datetime(dt.astimezone(timezone.utc), usegmt=True)

"""Where kept files live: a local directory (default) or S3-compatible object storage
(`CANOPY_STORAGE_URL=s3://bucket/prefix`), behind one small interface.

Keys are relative POSIX paths (`scans/3/a.laz`, `rasters/scan-3/chm-<job>-<attempt>.tif`).
This is the object store only: scratch files (uploads being received, job work
directories) live in a Workspace (server/workspace.py) and enter the store through
`publish`. `fetch(key)` makes a stored object readable locally: with a local
directory it is the file itself, with S3 a copy in a cache under CANOPY_STORAGE_CACHE.
Rasters are read in place by GDAL through `gdal_path(key)` (`/vsis3/…` for S3).
An object is removed only when what owns it (a scan file, a raster row) is.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import urlparse


class Storage(Protocol):
    def fetch(self, key: str) -> Path:
        """The object at `key` as a local file (FileNotFoundError if there is none)."""

    def publish(self, key: str, src: Path) -> None:
        """Put the finished local file `src` at `key` (src is consumed)."""

    def delete(self, key: str) -> None:
        """Remove `key` if it exists."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix/` (and its local copies)."""

    def exists(self, key: str) -> bool: ...

    def stat(self, key: str) -> tuple[str, int]:
        """(version, size): the version changes whenever the object does."""

    def read(self, key: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The bytes [start, stop) of `key`, in chunks."""

    def gdal_path(self, key: str) -> str:
        """What GDAL opens to read `key` in place."""

    def check(self) -> None:
        """Raise unless the storage can be written and read."""


def _safe_key(key: str) -> str:
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"storage key escapes the storage root: {key!r}")
    return "/".join(parts)


class LocalStorage:
    """Files under a root directory."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, key: str) -> Path:
        target = (self.root / key).resolve()
        if self.root.resolve() not in target.parents and target != self.root.resolve():
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return target

    def fetch(self, key: str) -> Path:
        return self.path(key)

    def publish(self, key: str, src: Path) -> None:
        """An atomic rename; across filesystems (a workspace on another disk) a copy
        beside the target, renamed into place."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if Path(src).resolve() == final:
            return
        try:
            os.replace(src, final)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            partial = final.with_name(f".{final.name}.{os.getpid()}-{threading.get_ident()}.part")
            try:
                shutil.copyfile(src, partial)
                os.replace(partial, final)
            finally:
                partial.unlink(missing_ok=True)
            Path(src).unlink()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def stat(self, key: str) -> tuple[str, int]:
        st = self.path(key).stat()
        return f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}", st.st_size

    def read(self, key: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        with open(self.path(key), "rb") as fh:
            fh.seek(start)
            left = None if stop is None else stop - start
            while left is None or left > 0:
                chunk = fh.read(1 << 20 if left is None else min(1 << 20, left))
                if not chunk:
                    return
                left = None if left is None else left - len(chunk)
                yield chunk

    def gdal_path(self, key: str) -> str:
        return str(self.path(key))

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".ready-{os.getpid()}"
        probe.write_bytes(b"ok")
        if probe.read_bytes() != b"ok":
            raise OSError("storage read back something else")
        probe.unlink()


class S3Storage:
    """Objects in `s3://bucket/prefix` (any S3-compatible server: `endpoint`), read and
    written with boto3; GDAL reads rasters in place through `/vsis3/`. Fetched copies
    live under `cache` and are evicted least recently used first."""

    CACHE_MIN_AGE = 600.0  # seconds: a copy used more recently than this is never evicted

    def __init__(self, bucket: str, prefix: str, cache: Path, endpoint: str | None = None,
                 cache_bytes: int = 100 << 30):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix, self.cache = bucket, prefix.strip("/"), cache
        self.cache_bytes = cache_bytes
        self.client = boto3.client("s3", endpoint_url=endpoint or None,
                                   config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                                 s3={"addressing_style": "path"} if endpoint else {}))
        if endpoint:        # GDAL's /vsis3/ reads its endpoint from these configuration options
            parsed = urlparse(endpoint)
            os.environ.setdefault("AWS_S3_ENDPOINT", parsed.netloc)
            os.environ.setdefault("AWS_HTTPS", "NO" if parsed.scheme == "http" else "YES")
            os.environ.setdefault("AWS_VIRTUAL_HOSTING", "FALSE")
        self._lock = threading.Lock()

    def _name(self, key: str) -> str:
        key = _safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _cached(self, key: str) -> Path:
        target = self.cache / _safe_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def fetch(self, key: str) -> Path:
        """Download `key` into the cache unless the cached copy has the object's ETag."""
        target = self._cached(key)
        tag_file = target.with_name(target.name + ".etag")
        etag = self._head(key)["ETag"]
        if target.exists() and tag_file.exists() and tag_file.read_text() == etag:
            tag_file.touch()          # last use, for the eviction
            return target
        partial = target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.part")
        self.client.download_file(self.bucket, self._name(key), str(partial))
        os.replace(partial, target)
        tag_file.write_text(etag)
        self.evict(keep=target)
        return target

    def evict(self, keep: Path | None = None) -> int:
        """Delete the least recently used fetched copies until they fit in `cache_bytes`;
        copies used in the last CACHE_MIN_AGE seconds (a running task's) stay. Returns bytes freed."""
        now, copies = time.time(), []
        for tag in self.cache.rglob("*.etag"):
            data = tag.with_name(tag.name[:-len(".etag")])
            try:
                copies.append((tag.stat().st_mtime, data.stat().st_size, data, tag))
            except FileNotFoundError:   # evicted by another process meanwhile
                continue
        total, freed = sum(c[1] for c in copies), 0
        for used, size, data, tag in sorted(copies, key=lambda c: c[0]):
            if total - freed <= self.cache_bytes:
                break
            if data == keep or now - used < self.CACHE_MIN_AGE:
                continue
            tag.unlink(missing_ok=True)
            data.unlink(missing_ok=True)
            freed += size
        return freed

    def publish(self, key: str, src: Path) -> None:
        self.client.upload_file(str(src), self.bucket, self._name(key))
        Path(src).unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        cached = self.cache / _safe_key(key)
        cached.unlink(missing_ok=True)
        cached.with_name(cached.name + ".etag").unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._name(prefix) + "/")
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        shutil.rmtree(self.cache / _safe_key(prefix), ignore_errors=True)

    def _head(self, key: str) -> dict:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"no object {key!r} in s3://{self.bucket}/{self.prefix}") from err
            raise

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def stat(self, key: str) -> tuple[str, int]:
        head = self._head(key)
        return head["ETag"].strip('"'), int(head["ContentLength"])

    def read(self, key: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        ranged = f"bytes={start}-{'' if stop is None else stop - 1}"
        body = self.client.get_object(Bucket=self.bucket, Key=self._name(key), Range=ranged)["Body"]
        try:
            yield from body.iter_chunks(1 << 20)
        finally:
            body.close()

    def gdal_path(self, key: str) -> str:
        return f"/vsis3/{self.bucket}/{self._name(key)}"

    def check(self) -> None:
        key = f"tmp/ready/{os.uname().nodename}-{os.getpid()}"
        self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=b"ok")
        got = self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"].read()
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        if got != b"ok":
            raise OSError("storage read back something else")


def open_storage(url: str, cache: Path | None = None, endpoint: str | None = None,
                 cache_bytes: int = 100 << 30) -> Storage:
    """The storage at `url` (a path, file:// or s3://bucket/prefix); one per process."""
    return _open(url, cache, endpoint, cache_bytes, os.getpid())  # boto3 clients do not survive a fork


@lru_cache(maxsize=8)
def _open(url: str, cache: Path | None, endpoint: str | None, cache_bytes: int, pid: int) -> Storage:
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalStorage(Path(parsed.path if parsed.scheme else url))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket")
        if cache is None:
            raise ValueError("S3 storage needs a local cache directory")
        return S3Storage(parsed.netloc, parsed.path, cache, endpoint, cache_bytes)
    raise ValueError(f"unsupported storage URL scheme {parsed.scheme!r} (file:// or s3://)")


def storage_of(settings) -> Storage:
    """The storage a Settings names (server.settings.Settings)."""
    return open_storage(settings.storage_url, settings.storage_cache, settings.s3_endpoint or None,
                        settings.s3_cache_bytes)

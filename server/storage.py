"""Where files live: a local directory (default) behind one small interface."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse


class LocalStorage:
    """Files under a root directory; keys are relative POSIX paths."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, key: str) -> Path:
        target = (self.root / key).resolve()
        if self.root.resolve() not in target.parents and target != self.root.resolve():
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return target

    def check(self) -> None:
        """Raise unless the storage can be written and read."""
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".ready-{os.getpid()}"
        probe.write_bytes(b"ok")
        if probe.read_bytes() != b"ok":
            raise OSError("storage read back something else")
        probe.unlink()


def open_storage(url: str) -> LocalStorage:
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalStorage(Path(parsed.path if parsed.scheme else url))
    raise ValueError(f"unsupported storage URL scheme {parsed.scheme!r} (file:// only for now)")

"""Scratch space on this machine: uploads being received and job work directories.

Nothing in a workspace is kept. What is kept is published to the object store
(server/storage.py) and belongs to a row that owns it (a scan file, a raster);
it is deleted only by deleting that owner. Keeping the two apart is what makes
"remove this upload's bytes" or "remove this job's files" unable to touch a
stored object.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class Workspace:
    """Scratch files under `root` (`CANOPY_WORK_DIR`)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, *parts: str) -> Path:
        target = self.root.joinpath(*parts).resolve()
        if self.root.resolve() not in target.parents:
            raise ValueError(f"scratch path escapes the workspace: {'/'.join(parts)!r}")
        return target

    def upload(self, upload_id: str) -> Path:
        """Where the bytes of an upload are received (its parent directory exists)."""
        path = self._path("uploads", f"{upload_id}.part")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def jobs(self) -> Path:
        """The directory holding one work directory per job (named by the job id)."""
        return self._path("jobs")

    def job_dir(self, job_id: str) -> Path:
        """An empty work directory for a job (leftovers of an earlier attempt removed)."""
        path = self._path("jobs", job_id)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


def workspace_of(settings) -> Workspace:
    """The workspace a Settings names (server.settings.Settings)."""
    return Workspace(settings.work_dir)

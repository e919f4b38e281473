"""pygeoapi's view of Canopy's jobs: a process manager backed by the PostGIS `jobs`
table and the Huey queue. Canopy's own routes (server/jobs/views.py) serve execution
and /jobs; this manager keeps pygeoapi's code paths consistent with them."""

from __future__ import annotations

from pygeoapi.process.base import JobNotFoundError
from pygeoapi.process.manager.base import BaseManager
from pygeoapi.util import JobStatus

from ..settings import get_settings
from . import store
from .follow import follow_up
from .queue import enqueue


class CanopyManager(BaseManager):
    def __init__(self, manager_def: dict):
        super().__init__(manager_def)
        self.is_async = True
        self.supports_subscribing = True

    def get_jobs(self, status: JobStatus = None, limit=None, offset=None) -> dict:
        rows = store.page(None, process_id=None, status=status.value if status else None,
                          limit=limit or 100, before=None)
        return {"jobs": [self._as_pygeoapi(j) for j in rows], "numberMatched": len(rows)}

    def add_job(self, job_metadata: dict) -> str:
        return store.create(job_metadata["process_id"], {}, None, None)["id"]

    def update_job(self, job_id: str, update_dict: dict) -> bool:
        return True    # state moves only through server/jobs/store.py

    def get_job(self, job_id: str) -> dict:
        job = store.get(job_id, check=False)
        if job is None:
            raise JobNotFoundError()
        return self._as_pygeoapi(job)

    def get_job_result(self, job_id: str):
        job = store.get(job_id, check=False)
        if job is None:
            raise JobNotFoundError()
        return "application/json", job["results"]

    def delete_job(self, job_id: str) -> bool:
        previous, changes = store.dismiss(job_id)
        follow_up(changes, get_settings())
        return previous is not None

    def _execute_handler_async(self, p, job_id, data_dict, requested_outputs=None, subscriber=None,
                               requested_response=None):
        enqueue(job_id)
        return "application/json", None, JobStatus.accepted

    @staticmethod
    def _as_pygeoapi(job: dict) -> dict:
        return {"identifier": job["id"], "process_id": job["process_id"], "status": job["status"],
                "message": job["message"], "progress": job["progress"], "created": job["created"],
                "started": job["started"], "finished": job["finished"], "updated": job["updated"],
                "mimetype": "application/json", "type": "process"}

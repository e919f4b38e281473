"""`GET /jobs/{id}/events` on asyncio: Server-Sent Events that hold no thread.

An idle stream is a socket, a Redis pub/sub connection and a coroutine, so hundreds of
open streams cost a web worker nothing while its thread pool keeps serving the API
(a stream per thread froze the server at 16). Who may read the job is decided by the
Flask app itself: the stream opens with an internal `GET /jobs/{id}` carrying the
client's headers (the same authentication, access policy and error answers), and
every later status comes from Redis, re-read from the database after a quiet
`keepalive` in case an event was lost.

A stream ends with the job's final event (successful, failed, dismissed), with an
`error` event when Redis goes away (clients reconnect after `retry`), or with a
`retry` hint when the server shuts down; it never ends by a cut.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Callable
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder, run_wsgi_app

from ..settings import Settings
from . import events, store

PATH = re.compile(r"/jobs/(?P<job_id>[^/]+)/events/?")
STOPPING = asyncio.Event()       # set by the web worker on SIGTERM/SIGINT (server/webworker.py)
RETRY_MS = 5000
log = logging.getLogger("canopy.events")


def _status_of(job: dict) -> dict:
    updated = job["updated"]
    return {"jobID": job["id"], "status": job["status"], "progress": job["progress"],
            "message": job["message"], "updated": updated.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if updated else None}


class EventStreams:
    """The ASGI app of the events route; `flask_app` answers who may see the job."""

    def __init__(self, flask_app: Callable, settings: Settings):
        self.flask_app, self.settings = flask_app, settings
        self.open = 0
        self.watching: dict[str, set[asyncio.Future]] = {}     # job id -> its streams' `ended`
        self._rereading: asyncio.Future | None = None
        self._redis: aioredis.Redis | None = None

    def redis(self) -> aioredis.Redis:
        if self._redis is None:     # made on first use, inside the worker's event loop
            self._redis = aioredis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2,
                                                  socket_keepalive=True, health_check_interval=0)
        return self._redis

    def _ask_flask(self, scope: dict, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """`GET path` through the whole Flask app with the client's headers (run on a thread)."""
        headers = Headers([(k.decode("latin1"), v.decode("latin1")) for k, v in scope.get("headers", [])])
        headers.remove("Content-Length")
        client = scope.get("client") or ("127.0.0.1", 0)
        environ = EnvironBuilder(path=path, method="GET", headers=headers,
                                 environ_base={"REMOTE_ADDR": client[0]}).get_environ()
        body, status, response_headers = run_wsgi_app(self.flask_app, environ, buffered=True)
        return int(status.split()[0]), list(response_headers.items()), b"".join(body)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        job_id = PATH.fullmatch(scope["path"])["job_id"]
        if self.open >= self.settings.sse_max_streams:
            await _problem(send, 503, "too many open event streams on this server; poll /jobs/{id}",
                           "ServiceUnavailable")
            return
        self.open += 1
        try:
            await self._serve(job_id, scope, receive, send)
        finally:
            self.open -= 1

    async def _serve(self, job_id: str, scope: dict, receive: Callable, send: Callable) -> None:
        pubsub = self.redis().pubsub(ignore_subscribe_messages=True)
        try:
            try:            # subscribe first, read the state after: no update falls in between
                await pubsub.subscribe(events.channel(job_id))
            except (redis.RedisError, OSError):
                await _problem(send, 503, "live job updates are unavailable (Redis is unreachable); "
                                          "poll /jobs/{id} or retry", "ServiceUnavailable")
                return
            status, headers, body = await asyncio.to_thread(self._ask_flask, scope, f"/jobs/{quote(job_id, safe='')}")
            if status != 200:           # 401, 404, 503 …: exactly what GET /jobs/{id} answers
                await send({"type": "http.response.start", "status": status,
                            "headers": [(k.encode("latin1"), v.encode("latin1")) for k, v in headers]})
                await send({"type": "http.response.body", "body": body})
                return
            current = {k: v for k, v in json.loads(body).items() if k in
                       ("jobID", "status", "progress", "message", "updated")}
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"), (b"x-content-type-options", b"nosniff")]})
            await _write(send, f"retry: {RETRY_MS}\n" + events.frame(current))
            if current["status"] not in store.FINAL:
                await self._follow(job_id, pubsub, receive, send)
            await send({"type": "http.response.body", "body": b""})
        finally:
            try:
                await pubsub.aclose()
            except (redis.RedisError, OSError):
                pass

    async def _follow(self, job_id: str, pubsub: Any, receive: Callable, send: Callable) -> None:
        """Relay the job's events until a final one, the client leaves, Redis goes away
        or the server stops."""
        gone = asyncio.ensure_future(_disconnected(receive))
        stopping = asyncio.ensure_future(STOPPING.wait())
        ended = self._watch(job_id)
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        try:
            while True:
                getting = asyncio.ensure_future(pubsub.get_message(timeout=self.settings.sse_keepalive))
                done, _ = await asyncio.wait({getting, gone, stopping, ended}, return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                if gone in done:
                    return
                if stopping in done:
                    await _write(send, "retry: 1000\n: the server is restarting; reconnect\n\n")
                    return
                if ended in done:           # final in the database, its event lost: say so now
                    await _write(send, events.frame(_status_of(ended.result())))
                    return
                try:
                    message = getting.result()
                except (redis.RedisError, OSError) as err:
                    log.warning("event stream of job %s lost Redis: %s", job_id, type(err).__name__)
                    await _write(send, _error_frame(job_id))
                    return
                if message is None:
                    if loop.time() - quiet_since >= self.settings.sse_keepalive * 0.9:
                        quiet_since = loop.time()   # (not the subscription's confirmation)
                        await _write(send, ": keep-alive\n\n")
                    continue
                data = json.loads(message["data"])
                await _write(send, events.frame(data))
                if data["status"] in store.FINAL:
                    return
        finally:
            gone.cancel()
            stopping.cancel()
            self._unwatch(job_id, ended)

    def _watch(self, job_id: str) -> asyncio.Future:
        """A future set to the job's row when a re-read finds it final."""
        ended = asyncio.get_running_loop().create_future()
        self.watching.setdefault(job_id, set()).add(ended)
        if self._rereading is None or self._rereading.done():
            self._rereading = asyncio.ensure_future(self._reread())
        return ended

    def _unwatch(self, job_id: str, ended: asyncio.Future) -> None:
        futures = self.watching.get(job_id, set())
        futures.discard(ended)
        if not futures:
            self.watching.pop(job_id, None)

    async def _reread(self) -> None:
        """Every `keepalive`, one query for all the jobs this process streams: a final
        state whose event was lost (Redis was away from the worker) still ends its
        streams. One query per process, not one per stream."""
        while self.watching:
            await asyncio.sleep(self.settings.sse_keepalive)
            try:
                rows = await asyncio.to_thread(store.final_among, list(self.watching))
            except Exception as err:    # the database is away: Redis still carries the events
                log.warning("event streams could not re-read their jobs: %s", type(err).__name__)
                continue
            for row in rows:
                for ended in self.watching.get(row["id"], ()):
                    if not ended.done():
                        ended.set_result(row)


async def _disconnected(receive: Callable) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _write(send: Callable, text: str) -> None:
    await send({"type": "http.response.body", "body": text.encode(), "more_body": True})


def _error_frame(job_id: str) -> str:
    body = {"jobID": job_id, "status": 503, "title": "Service Unavailable",
            "detail": "live updates stopped: Redis is unreachable; reconnect, or poll /jobs/{id}"}
    return f"retry: {RETRY_MS}\nevent: error\ndata: {json.dumps(body)}\n\n"


async def _problem(send: Callable, status: int, detail: str, code: str) -> None:
    body = json.dumps({"type": f"urn:canopy:error:{code}", "title": "Service Unavailable", "status": status,
                       "detail": detail, "code": code, "description": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/problem+json"), (b"retry-after", b"5")]})
    await send({"type": "http.response.body", "body": body})

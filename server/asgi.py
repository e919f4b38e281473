"""The ASGI entry point gunicorn serves (`server.asgi:app`, worker class
`server.webworker.WebWorker`): one asyncio loop per web worker in front of the Flask app.

Job event streams (`GET /jobs/{id}/events`) are served on the loop itself
(server/jobs/stream.py), so an open stream holds no thread; every other request runs
the Flask app on a pool of `WEB_THREADS` threads, as gunicorn's threaded worker did.
"""

from __future__ import annotations

from a2wsgi import WSGIMiddleware

from .app import create_app
from .jobs.stream import PATH as EVENTS_PATH, EventStreams
from .settings import Settings, get_settings


def create_asgi(settings: Settings | None = None):
    settings = settings or get_settings()
    flask_app = create_app(settings)
    wsgi = WSGIMiddleware(flask_app, workers=settings.web_threads)
    streams = EventStreams(flask_app, settings)

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and EVENTS_PATH.fullmatch(scope["path"]):
            await streams(scope, receive, send)
        else:
            await wsgi(scope, receive, send)

    app.flask_app, app.streams = flask_app, streams
    return app


app = create_asgi()

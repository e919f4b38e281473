"""The gunicorn worker class of the web server: uvicorn's (one asyncio loop per process)
with the settings Canopy relies on, and a graceful stop that also ends event streams.

- `proxy_headers` off: client addresses come from ProxyFix, for `CANOPY_PROXY_HOPS`
  trusted proxies only (uvicorn would otherwise trust X-Forwarded-For from loopback);
- the h11 parser and the plain asyncio loop (no optional C extensions needed);
- on SIGTERM/SIGINT open event streams are told to reconnect and closed, so the worker
  stops within seconds instead of waiting out gunicorn's graceful timeout on them.
"""

from __future__ import annotations

import asyncio
import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker


class _Server(Server):
    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        from .jobs.stream import STOPPING
        try:
            asyncio.get_running_loop().call_soon_threadsafe(STOPPING.set)
        except RuntimeError:        # no loop running yet: nothing is streaming
            pass


class WebWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "asyncio", "http": "h11", "proxy_headers": False, "lifespan": "off",
                     "server_header": False}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

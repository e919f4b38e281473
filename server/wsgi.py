"""The WSGI entry point gunicorn serves: `server.wsgi:app`."""

from .app import create_app

app = create_app()

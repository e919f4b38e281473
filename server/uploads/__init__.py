"""Resumable uploads of LAS/LAZ scans over tus 1.0.0."""

from . import views  # noqa: E402,F401  (the blueprint)

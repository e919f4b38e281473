"""What a provider needs to know about the current request, set by the web layer.

Providers are pygeoapi plugins and must not import Flask; the server fills this
context before pygeoapi calls them (see server/features.py), and reads back what
the provider reports (the version behind an ETag).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from db.access import Principal


@dataclass
class RequestContext:
    principal: Principal | None = None
    items_url: str = ""                       # absolute URL of the items endpoint (for links)
    query: dict[str, str] = field(default_factory=dict)  # the request's query parameters
    cursor: str | None = None                 # keyset cursor of the page asked for
    filter: Any = None                        # parsed CQL2 filter (pygeofilter AST)
    filter_srid: int = 4326                   # CRS of the filter's geometry literals
    filter_flip: bool = False                 # literals in lat/lon order (EPSG:4326)
    if_match: int | None = None               # version the client says it is changing
    page_links: list | None = None            # next/prev links the provider made for the page
    version: int | None = None                # version of the item served or written (ETag)
    run: str | None = None                    # `run`: a job id, "all", or None for the current runs
    json_page: bool = False                   # the page is served as JSON: features may stay encoded


current: ContextVar[RequestContext] = ContextVar("canopy_request", default=RequestContext())


def get() -> RequestContext:
    return current.get()

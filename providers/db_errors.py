"""What a database error caused by the client's input tells the client: one table from
SQLSTATE to a sentence of ours. The database's own text can name internal types,
functions and values ("bigint out of range", "lwgeom_intersection: GEOS Error ..."):
it goes to the log, never into a response."""

from __future__ import annotations

import logging
import re

import psycopg

_log = logging.getLogger("canopy.db")

# errors of the client's values (SQLSTATE classes 22 and 23, a wrong operator for a
# type, PostGIS's internal errors on a bad geometry), not of the server
CLIENT_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.UndefinedFunction,
                 psycopg.errors.InvalidParameterValue, psycopg.errors.InternalError_)

_MESSAGES = {
    "22001": "a text value is too long",
    "22003": "a number is out of range",
    "22007": "a date or time is not valid",
    "22008": "a date or time is out of range",
    "22012": "the query divides by zero",
    "22021": "a text contains a character that cannot be stored",
    "22023": "a parameter value is not valid",
    "2201B": "a pattern is not valid",
    "22P02": "a value does not have the property's type",
    "22P05": "a text contains a character that cannot be stored",
    "23502": "{column} is required",
    "23503": "{key} does not exist",
    "23505": "an item with this {key} already exists",
    "23514": "a value breaks the rule {constraint}",
    "42883": "an operator or function does not apply to a property of this type",
    "XX000": "a geometry in the query is not valid",
}
_BY_CLASS = {"22": "a value in the query is not valid", "23": "the item breaks a rule of the data"}
_KEY = re.compile(r"Key \(([\w, ]+)\)=\((.*)\)")


def describe(err: psycopg.Error) -> str:
    """Our sentence for `err` (one of CLIENT_ERRORS); its own text is logged."""
    diag = err.diag
    _log.info("database refused the client's input: %s %s", err.sqlstate, diag.message_primary)
    state = err.sqlstate or ""
    template = _MESSAGES.get(state) or _BY_CLASS.get(state[:2], "the query cannot be applied")
    key = _KEY.match(diag.message_detail or "")
    return template.format(column=diag.column_name or "a property", constraint=diag.constraint_name or "",
                           key=f"{key[1]} {key[2]}" if key else "what it refers to")

"""The compiler for the engine's hand-written loops (numba).

Loops that numpy cannot express without large temporaries (walking a TIN,
scan-converting triangles, per-group statistics) are written as plain Python
over arrays and compiled by numba to machine code.  ``kernel`` is the one way
to do that here: compiled on first use, cached on disk next to the module (so
later processes load it instead of compiling), and releasing the GIL so the
engine's threads run the loops in parallel.
"""
from __future__ import annotations

import numba

kernel = numba.njit(cache=True, nogil=True)

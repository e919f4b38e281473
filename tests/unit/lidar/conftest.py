"""Shared fixtures: synthetic forests (generated once per session) and sample files."""
from __future__ import annotations

from pathlib import Path

import pytest

from processes.lidar.accuracy import match_trees  # noqa: F401 (the one matching rule, used by the tests)
from processes.lidar.synthetic import make_forest, write_las

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
BCTS = sorted(SHARED.glob("bcts_*.laz"))


def shared_file(name: str) -> Path:
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"{name} not present in ../shared/data")
    return p


@pytest.fixture(scope="session")
def forests():
    """Forests by (kind, terrain, classified, seed), generated lazily and cached."""
    cache = {}

    def get(kind="open", terrain="hilly", classified=True, seed=1, size=100.0):
        key = (kind, terrain, classified, seed, size)
        if key not in cache:
            cache[key] = make_forest(kind, terrain=terrain, classified=classified, seed=seed, size=size)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def small_laz(tmp_path_factory):
    """A small classified forest written as LAZ (and its truth)."""
    pts, truth = make_forest("open", size=60.0, seed=7)
    path = tmp_path_factory.mktemp("las") / "small.laz"
    write_las(path, pts)
    return path, pts, truth


@pytest.fixture(scope="session")
def small_las(tmp_path_factory):
    pts, truth = make_forest("open", size=40.0, seed=8)
    path = tmp_path_factory.mktemp("las") / "small.las"
    write_las(path, pts)
    return path, pts, truth

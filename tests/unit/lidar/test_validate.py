"""Header validation, CRS handling and bad input: every failure is a LidarError with a message."""
from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from processes.lidar import errors
from processes.lidar.read import iter_points, open_scan, read_points
from processes.lidar.synthetic import make_forest, write_las
from processes.lidar.validate import inspect

from .conftest import shared_file


def _patch(src, dst, offset, fmt, *values):
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, *values))
    return dst


def test_inspect_facts_match_the_file(small_laz):
    path, pts, _ = small_laz
    info = inspect(path)
    assert info["las_version"] == "1.2"
    assert info["point_format"] == 1
    assert info["point_count"] == len(pts)
    assert info["crs_epsg"] == 32610
    assert info["compressed"] and not info["is_copc"]
    b = info["bounds"]
    assert b[0] == pytest.approx(pts.x.min(), abs=0.002) and b[3] == pytest.approx(pts.x.max(), abs=0.002)
    assert b[2] == pytest.approx(pts.z.min(), abs=0.002) and b[5] == pytest.approx(pts.z.max(), abs=0.002)
    assert info["warnings"] == []
    assert info["has_ground_class"] is True


def test_roundtrip_points(small_laz):
    path, pts, _ = small_laz
    got = read_points(open_scan(path))
    assert len(got) == len(pts)
    assert np.allclose(np.sort(got.x), np.sort(pts.x), atol=0.0011)
    assert (np.bincount(got.classification, minlength=8) == np.bincount(pts.classification, minlength=8)).all()


def test_not_a_las_file(tmp_path):
    p = tmp_path / "x.laz"
    p.write_bytes(b"PK\x03\x04 this is a zip file" * 20)
    with pytest.raises(errors.InvalidPointCloud, match="LASF"):
        inspect(p)


def test_empty_and_tiny_files(tmp_path):
    p = tmp_path / "empty.las"
    p.write_bytes(b"")
    with pytest.raises(errors.InvalidPointCloud):
        inspect(p)
    p.write_bytes(b"LASF" + b"\0" * 50)
    with pytest.raises(errors.TruncatedFile):
        inspect(p)


def test_absurd_point_count_refused_before_allocation(small_laz, tmp_path):
    path, _, _ = small_laz
    bad = _patch(path, tmp_path / "huge.laz", 107, "<I", 4_000_000_000)
    with pytest.raises(errors.TruncatedFile, match="promises"):
        inspect(bad)
    # LAS 1.4 64-bit count of 10**12
    pts, _ = make_forest("open", size=20.0, seed=3)
    p14 = write_las(tmp_path / "v14.laz", pts, version="1.4", point_format=6)
    bad14 = _patch(p14, tmp_path / "huge14.laz", 247, "<Q", 10**12)
    with pytest.raises(errors.TruncatedFile, match="1,000,000,000,000"):
        inspect(bad14)
    with pytest.raises(errors.TruncatedFile):
        open_scan(bad14)


def test_more_points_promised_than_held(small_las, small_laz, tmp_path):
    path, pts, _ = small_las
    bad = _patch(path, tmp_path / "more.las", 107, "<I", len(pts) + 10)
    with pytest.raises(errors.TruncatedFile, match="promises"):
        inspect(bad)
    lpath, lpts, _ = small_laz
    bad = _patch(lpath, tmp_path / "more.laz", 107, "<I", len(lpts) + 100_000)
    with pytest.raises(errors.TruncatedFile):
        inspect(bad)


def test_truncated_files(small_las, small_laz, tmp_path):
    for src, name in ((small_las[0], "t.las"), (small_laz[0], "t.laz")):
        data = src.read_bytes()
        p = tmp_path / name
        p.write_bytes(data[: len(data) // 2])
        with pytest.raises(errors.TruncatedFile):
            inspect(p)
    # header only, promising points
    p = tmp_path / "header_only.las"
    data = small_las[0].read_bytes()
    (off,) = struct.unpack_from("<I", data, 96)
    p.write_bytes(data[:off])
    with pytest.raises(errors.TruncatedFile):
        inspect(p)


def test_zero_scale_and_nan_bounds(small_las, tmp_path):
    path = small_las[0]
    with pytest.raises(errors.InvalidPointCloud, match="scale"):
        inspect(_patch(path, tmp_path / "s.las", 131, "<d", 0.0))
    with pytest.raises(errors.InvalidPointCloud, match="bounds"):
        inspect(_patch(path, tmp_path / "n.las", 179, "<d", float("nan")))
    with pytest.raises(errors.InvalidPointCloud, match="absurd"):
        inspect(_patch(path, tmp_path / "a.las", 179, "<d", 1e12))


def test_bad_version_and_format(small_las, tmp_path):
    with pytest.raises(errors.InvalidPointCloud, match="version"):
        inspect(_patch(small_las[0], tmp_path / "v.las", 24, "<BB", 2, 0))
    with pytest.raises(errors.InvalidPointCloud, match="format"):
        inspect(_patch(small_las[0], tmp_path / "f.las", 104, "<B", 42))


def test_corrupt_chunk_table_falls_back_to_sequential_decoder(small_laz, tmp_path):
    path, pts, _ = small_laz
    data = bytearray(path.read_bytes())
    (off,) = struct.unpack_from("<I", data, 96)
    (table,) = struct.unpack_from("<q", data, off)
    # keep version + chunk count, scramble the compressed entries
    for i in range(table + 8, len(data)):
        data[i] = 0xFF
    p = tmp_path / "corrupt_table.laz"
    p.write_bytes(bytes(data))
    info = inspect(p)  # readable with the sequential decoder: accepted with a warning
    assert info["sequential_only"] and info["warnings"]
    got = read_points(open_scan(p))
    assert len(got) == len(pts)


def test_corrupt_point_data_is_a_lidar_error(small_laz, tmp_path):
    path, pts, _ = small_laz
    data = bytearray(path.read_bytes())
    (off,) = struct.unpack_from("<I", data, 96)
    rng = np.random.default_rng(0)
    for i in rng.integers(off + 200, off + 20_000, 3000):
        data[i] = rng.integers(0, 256)
    p = tmp_path / "garbage.laz"
    p.write_bytes(bytes(data))
    try:
        scan = open_scan(p)
        n = sum(len(c) for c in iter_points(scan))
    except errors.LidarError:
        return
    # LAZ decoders cannot always detect flipped bits; then the count must still be right
    assert n == len(pts)


def test_unknown_crs_needs_override(tmp_path):
    pts, _ = make_forest("open", size=20.0, seed=4)
    p = write_las(tmp_path / "nocrs.laz", pts, crs=None)
    assert inspect(p)["crs_wkt"] is None
    with pytest.raises(errors.UnknownCRS, match="crs="):
        open_scan(p)
    scan = open_scan(p, crs="EPSG:3005")
    assert scan.crs.epsg == 3005
    with pytest.raises(errors.UnknownCRS):
        open_scan(p, crs="not a crs")
    with pytest.raises(errors.UnknownCRS, match="geographic"):
        open_scan(p, crs="EPSG:4326")


def test_single_point_scan(tmp_path):
    from processes.lidar.points import from_arrays

    p = write_las(tmp_path / "one.las", from_arrays([500000.0], [5400000.0], [100.0], classification=[2]))
    info = inspect(p)
    assert info["point_count"] == 1
    assert len(read_points(open_scan(p))) == 1


def test_mixed_crs_refused(tmp_path):
    pts, _ = make_forest("open", size=20.0, seed=5)
    a = write_las(tmp_path / "a.laz", pts, crs="EPSG:32610")
    b = write_las(tmp_path / "b.laz", pts, crs="EPSG:32611")
    with pytest.raises(errors.IncompatibleInputs):
        open_scan([a, b])


def test_shared_compound_wkt_uses_horizontal_part():
    info = inspect(shared_file("las14_pdrf6.laz"))
    assert info["crs_wkt"] and "UTM" in info["crs_wkt"].upper() or "Transverse" in info["crs_wkt"]
    assert any("horizontal part" in w for w in info["warnings"])
    assert info["las_version"] == "1.4" and info["point_format"] == 6


def test_shared_feet_and_copc():
    scan = open_scan(shared_file("autzen_trim.laz"))
    assert scan.crs.xy_to_m == pytest.approx(0.3048, rel=1e-3)
    info = inspect(shared_file("example.copc.laz"))
    assert info["is_copc"] and info["point_count"] == 30 and info["crs_epsg"] == 26917


def test_shared_bcts_headers():
    info = inspect(shared_file("bcts_1.laz"))
    assert info["point_count"] == 531_662 and info["crs_epsg"] == 3005

"""Raster tiles, TileJSON, WMTS and COG download against the real server, PostGIS and
COGs with known values, read back by real clients (Pillow, GDAL, OWSLib)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import morecantile
import numpy as np
import psycopg
import pyproj
import pytest
import rasterio
import requests
from PIL import Image
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

# A 1000 x 1000 CHM at 0.5 m in UTM 10N (Malcolm Knapp Research Forest): the height at
# column c, row r is 0.02 c + 0.01 r metres (0..30 m), with a 100 x 100 px no-data corner.
EPSG = 32610
X0, Y0, RES, N = 531000.0, 5461000.0, 0.5, 1000
NODATA = -9999.0
WM = morecantile.tms.get("WebMercatorQuad")
_TO_UTM = pyproj.Transformer.from_crs(3857, EPSG, always_xy=True)


def chm_height(easting: np.ndarray, northing: np.ndarray) -> np.ndarray:
    col = np.floor((easting - X0) / RES)
    row = np.floor((Y0 - northing) / RES)
    return 0.02 * col + 0.01 * row


def _write_cog(path: Path, data: np.ndarray, nodata: float | None = NODATA) -> Path:
    profile = dict(driver="GTiff", width=data.shape[-1], height=data.shape[-2],
                   count=1 if data.ndim == 2 else data.shape[0], dtype="float32",
                   crs=f"EPSG:{EPSG}", transform=from_origin(X0, Y0, RES, RES), nodata=nodata)
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data if data.ndim == 3 else data[None])
        with mem.open() as src:
            cog_translate(src, str(path), cog_profiles.get("deflate"), quiet=True,
                          overview_resampling="nearest")
    return path


def _footprint() -> str:
    to_ll = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    xs, ys = to_ll.transform([X0, X0 + N * RES, X0 + N * RES, X0, X0], [Y0, Y0, Y0 - N * RES, Y0 - N * RES, Y0])
    return json.dumps({"type": "Polygon", "coordinates": [[list(p) for p in zip(xs, ys)]]})


@pytest.fixture(scope="module")
def cogs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cogs")
    rows, cols = np.mgrid[0:N, 0:N].astype("float32")
    chm = (0.02 * cols + 0.01 * rows).astype("float32")
    chm[:100, :100] = NODATA
    dtm = (300 + 20 * np.sin(cols / 80) + 0.05 * rows).astype("float32")
    metrics = np.stack([chm, 100 - chm, np.full_like(chm, 7.5)]).astype("float32")
    metrics[:, :100, :100] = NODATA
    return {"chm": _write_cog(root / "chm.tif", chm), "dtm": _write_cog(root / "dtm.tif", dtm, None),
            "metrics": _write_cog(root / "metrics.tif", metrics)}


@pytest.fixture(scope="module")
def rasters(db_url, cogs) -> dict[str, int]:
    """Raster rows: chm/dtm/metrics in a public project, 'private' (the CHM) in a private one."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        public = conn.execute("INSERT INTO projects (name, visibility) VALUES ('tiles public', 'public') "
                              "RETURNING id").fetchone()[0]
        private = conn.execute("INSERT INTO projects (name, visibility) VALUES ('tiles private', 'private') "
                               "RETURNING id").fetchone()[0]
        out = {}
        for name, kind, project, path in (("chm", "chm", public, cogs["chm"]), ("dtm", "dtm", public, cogs["dtm"]),
                                          ("metrics", "metrics", public, cogs["metrics"]),
                                          ("private", "chm", private, cogs["chm"])):
            out[name] = conn.execute(
                "INSERT INTO rasters (project_id, kind, storage_uri, crs_epsg, resolution_m, footprint) "
                "VALUES (%s, %s, %s, %s, %s, ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)) RETURNING id",
                (project, kind, path.as_uri(), EPSG, RES, _footprint())).fetchone()[0]
    return out


def _centre_tile(z: int) -> morecantile.Tile:
    to_ll = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    lon, lat = to_ll.transform(X0 + N * RES * 0.6, Y0 - N * RES * 0.6)
    return WM.tile(lon, lat, z)


def _pixel_truth(tile: morecantile.Tile) -> tuple[np.ndarray, np.ndarray]:
    """(heights, inside) at the centres of the tile's 256 x 256 pixels."""
    b = WM.xy_bounds(tile)
    step = (b.right - b.left) / 256
    xs = b.left + (np.arange(256) + 0.5) * step
    ys = b.top - (np.arange(256) + 0.5) * step
    mx, my = np.meshgrid(xs, ys)
    e, n = _TO_UTM.transform(mx, my)
    col, row = (e - X0) / RES, (Y0 - n) / RES
    inside = (col >= 0) & (col < N) & (row >= 0) & (row < N) & ~((col < 100) & (row < 100))
    return chm_height(e, n), inside


def _get(url: str, **kw) -> requests.Response:
    return requests.get(url, timeout=30, **kw)


def _grey(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """The grey level `rescale=low,high&colormap=gray` gives `values`: rio-tiler's `gray` table
    at the rescaled index (the table repeats a few levels: entry 122 is 121). The server maps
    onto 255 levels plus transparency, so a level may differ by one; resampling may pick the
    neighbouring pixel (0.03 m here), rarely one more."""
    from rio_tiler.colormap import cmap
    table = np.array([cmap.get("gray")[i][0] for i in range(256)], dtype=int)
    return table[np.clip(np.rint((values - low) / (high - low) * 255), 0, 255).astype(int)]


def _rgba(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))


# --- tile values --------------------------------------------------------------------------

@pytest.mark.parametrize("z", [17, 18])
def test_chm_tile_with_known_rescale_decodes_to_heights(server, rasters, z):
    tile = _centre_tile(z)
    r = _get(f"{server}/rasters/{rasters['chm']}/tiles/WebMercatorQuad/{z}/{tile.y}/{tile.x}.png"
             "?rescale=0,40&colormap=gray")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/png"
    rgba = _rgba(r.content)
    truth, inside = _pixel_truth(tile)
    assert inside.sum() > 1000
    error = np.abs(rgba[..., 0].astype(int) - _grey(truth, 0, 40))[inside]
    assert error.max() <= 2 and np.median(error) == 0, error.max()
    assert np.all(rgba[..., 3][inside] == 255)


def test_nodata_is_transparent_and_default_style_is_viridis(server, rasters):
    from rio_tiler.colormap import cmap
    # the tile holding the raster's north-west corner: no data in the corner block, outside too
    to_ll = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    lon, lat = to_ll.transform(X0 + 10, Y0 - 10)
    tile = WM.tile(lon, lat, 17)
    r = _get(f"{server}/rasters/{rasters['chm']}/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    rgba = _rgba(r.content)
    truth, inside = _pixel_truth(tile)
    assert (rgba[..., 3][~inside] == 0).mean() > 0.98        # no data and outside: transparent
    assert (rgba[..., 3][inside] == 255).mean() > 0.98
    # default CHM style: viridis over 0..ceil(p98); colours follow the height order
    stats = _get(f"{server}/rasters/{rasters['chm']}/tilejson.json").json()["canopy:style"]
    assert stats["colormap"] == "viridis" and stats["rescale"][0] == 0
    low, high = stats["rescale"]
    viridis = np.array([cmap.get("viridis")[i][:3] for i in range(256)], dtype=float)
    pixels = rgba[..., :3][inside].astype(float)
    nearest = np.argmin(((pixels[:, None, :] - viridis[None]) ** 2).sum(-1), axis=1)
    expected = np.clip(truth[inside] - low, 0, None) / (high - low) * 255
    assert np.abs(nearest - expected).max() <= 3


def test_png_webp_jpeg_are_served_and_agree(server, rasters):
    tile = _centre_tile(17)
    url = f"{server}/rasters/{rasters['chm']}/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}"
    images = {}
    for suffix, media in ((".png", "image/png"), ("?f=webp", "image/webp"), (".webp", "image/webp"),
                          (".jpeg", "image/jpeg"), ("?f=jpg", "image/jpeg")):
        r = _get(url + suffix + ("&" if "?" in suffix else "?") + "rescale=0,40&colormap=gray")
        assert r.status_code == 200, (suffix, r.text)
        assert r.headers["Content-Type"] == media
        images[suffix] = _rgba(r.content)
        assert Image.open(io.BytesIO(r.content)).format == {"image/png": "PNG", "image/webp": "WEBP",
                                                            "image/jpeg": "JPEG"}[media]
    _, inside = _pixel_truth(tile)
    for suffix in (".webp", ".jpeg"):
        diff = np.abs(images[suffix][..., 0].astype(int) - images[".png"][..., 0].astype(int))[inside]
        assert np.median(diff) <= 2, suffix


def test_metrics_band_chosen_by_bidx_and_dtm_hillshade(server, rasters):
    tile = _centre_tile(17)
    truth, inside = _pixel_truth(tile)
    base = f"{server}/rasters/{rasters['metrics']}/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}.png"
    band2 = _rgba(_get(base + "?bidx=2&rescale=60,100&colormap=gray").content)
    error = np.abs(band2[..., 0].astype(int) - _grey(100 - truth, 60, 100))[inside]
    assert error.max() <= 2 and np.median(error) == 0
    band3 = _rgba(_get(base + "?bidx=3&rescale=0,10&colormap=gray").content)
    assert np.all(np.abs(band3[..., 0][inside].astype(int) - round(7.5 / 10 * 255)) <= 1)
    r = _get(base + "?bidx=4")
    assert r.status_code == 400 and "3 band" in r.json()["detail"]

    dtm = f"{server}/rasters/{rasters['dtm']}/tiles/WebMercatorQuad/16/{_centre_tile(16).y}/{_centre_tile(16).x}.png"
    shaded, flat = _rgba(_get(dtm).content), _rgba(_get(dtm + "?hillshade=false").content)
    assert shaded.shape == flat.shape == (256, 256, 4)
    # shading only darkens, and the sine ridges make it vary across the tile
    assert np.all(shaded[..., :3].astype(int) <= flat[..., :3].astype(int) + 1)
    assert shaded[..., :3].std() > 3 and not np.array_equal(shaded, flat)


# --- errors --------------------------------------------------------------------------------

def test_bad_tile_requests_are_4xx_problems(server, rasters):
    rid = rasters["chm"]
    tile = _centre_tile(17)
    base = f"{server}/rasters/{rid}/tiles"
    cases = [
        (f"{base}/WebMercatorQuad/abc/{tile.y}/{tile.x}", 400),
        (f"{base}/WebMercatorQuad/17/-1/{tile.x}", 400),
        (f"{base}/WebMercatorQuad/31/0/0", 404),                       # no such tile matrix
        (f"{base}/WebMercatorQuad/17/{2 ** 17}/{tile.x}", 404),          # row past the matrix
        (f"{base}/WebMercatorQuad/17/0/0", 404),                         # outside the tileset limits
        (f"{base}/WebMercatorQuad/2/1/2", 404),
        (f"{base}/NoSuchQuad/17/{tile.y}/{tile.x}", 404),
        (f"{server}/rasters/999999/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}", 404),
        (f"{server}/rasters/abc/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}", 404),
        (f"{base}/WebMercatorQuad/17/{tile.y}/{tile.x}.gif", 400),
        (f"{base}/WebMercatorQuad/17/{tile.y}/{tile.x}?rescale=5", 400),
        (f"{base}/WebMercatorQuad/17/{tile.y}/{tile.x}?rescale=9,1", 400),
        (f"{base}/WebMercatorQuad/17/{tile.y}/{tile.x}?rescale=0,nan", 400),
        (f"{base}/WebMercatorQuad/17/{tile.y}/{tile.x}?colormap=nope", 400),
        (f"{base}/WebMercatorQuad/17/{tile.y}/{tile.x}?colormap={{\"300\":[1,2,3]}}", 400),
        (f"{base}/WebMercatorQuad/17/{tile.y}/{tile.x}?bidx=0", 400),
        (f"{base}/WebMercatorQuad/17/{tile.y}/{tile.x}?hillshade=maybe", 400),
        (f"{server}/rasters/{rid}/point?lon=abc&lat=1", 400),
        (f"{server}/rasters/{rid}/point?lon=10&lat=95", 400),
        (f"{server}/rasters/{rid}/point?lon=10&lat=50", 404),            # outside the raster
        (f"{server}/rasters/{rid}/statistics?bins=0", 400),
        (f"{server}/tileMatrixSets/NoSuchQuad", 404),
        (f"{server}/rasters/{rid}/WMTSCapabilities.xml?tile_format=gif", 400),
        (f"{server}/rasters/{rid}/tilejson.json?tileMatrixSetId=Nope", 404),
    ]
    for url, status in cases:
        r = _get(url)
        assert r.status_code == status, (url, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/problem+json", url
        body = r.json()
        assert body["status"] == status and body["detail"], url


def test_private_raster_answers_exactly_like_a_missing_one(server, rasters):
    tile = _centre_tile(17)
    lon, lat = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True).transform(X0 + 250, Y0 - 250)
    for suffix in (f"/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}.png", "/tilejson.json",
                   "/WMTSCapabilities.xml", "/cog", "/tiles", "/tiles/WebMercatorQuad", "/statistics",
                   f"/point?lon={lon}&lat={lat}", ""):
        hidden = _get(f"{server}/rasters/{rasters['private']}{suffix}")
        missing = _get(f"{server}/rasters/987654321{suffix}")
        assert hidden.status_code == missing.status_code == 404, suffix
        assert hidden.json()["code"] == missing.json()["code"]
        assert hidden.json()["detail"].replace(str(rasters["private"]), "X") == \
            missing.json()["detail"].replace("987654321", "X"), suffix
        # the same file is served to whoever may see it
        assert _get(f"{server}/rasters/{rasters['chm']}{suffix}").status_code == 200, suffix


def _member_token(server: str, db_url: str, project_id: int) -> str:
    """A viewer-role user who is a member of `project_id`, signed in through /auth/token."""
    from argon2 import PasswordHasher
    with psycopg.connect(db_url, autocommit=True) as conn:
        user = conn.execute("INSERT INTO users (username, password_hash, role) VALUES (%s, %s, 'viewer') "
                            "RETURNING id", (f"tiles-member-{project_id}", PasswordHasher().hash("pass-word-1")),
                            ).fetchone()[0]
        conn.execute("INSERT INTO project_members (project_id, user_id, role) VALUES (%s, %s, 'viewer')",
                     (project_id, user))
    r = requests.post(f"{server}/auth/token", json={"username": f"tiles-member-{project_id}",
                                                    "password": "pass-word-1"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_project_members_get_private_tiles_with_private_caching(server, rasters, db_url):
    with psycopg.connect(db_url) as conn:
        project = conn.execute("SELECT project_id FROM rasters WHERE id = %s", (rasters["private"],)).fetchone()[0]
    auth = {"Authorization": f"Bearer {_member_token(server, db_url, project)}"}
    tile = _centre_tile(17)
    url = f"{server}/rasters/{rasters['private']}/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}.png?rescale=0,40"
    assert _get(url).status_code == 404
    r = _get(url, headers=auth)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert r.headers["Cache-Control"].startswith("private") and "Authorization" in r.headers["Vary"]
    public = _get(url.replace(f"/rasters/{rasters['private']}/", f"/rasters/{rasters['chm']}/"))
    assert np.array_equal(_rgba(r.content), _rgba(public.content))        # the same file, same pixels
    assert _get(f"{server}/rasters/{rasters['private']}/cog", headers={**auth, "Range": "bytes=0-3"}).content \
        in (b"II*\x00", b"MM\x00*")
    tj = _get(f"{server}/rasters/{rasters['private']}/tilejson.json", headers=auth)
    assert tj.status_code == 200 and tj.headers["Cache-Control"].startswith("private")
    # a bad token is refused outright, not treated as anonymous
    assert _get(url, headers={"Authorization": "Bearer not-a-token"}).status_code == 401


def test_redis_tile_cache_round_trip_and_failure_is_harmless(services, monkeypatch):
    from server.settings import get_settings
    from server.tiles import cache
    monkeypatch.setenv("CANOPY_TILE_CACHE_TTL", "30")
    get_settings.cache_clear()
    monkeypatch.setattr(cache, "_client", None)
    redis_url = services[1]
    cache.put(redis_url, "etag-test", b"tile bytes")
    assert cache.get(redis_url, "etag-test") == b"tile bytes"
    assert cache.get(redis_url, "etag-other") is None
    import redis
    assert 0 < redis.Redis.from_url(redis_url).ttl("canopy:tile:etag-test") <= 30
    monkeypatch.setattr(cache, "_client", None)
    dead = "redis://127.0.0.1:1/0"
    assert cache.get(dead, "etag-test") is None            # logged, not raised
    cache.put(dead, "etag-test", b"x")
    monkeypatch.setattr(cache, "_client", None)
    monkeypatch.delenv("CANOPY_TILE_CACHE_TTL")
    get_settings.cache_clear()


# --- caching -----------------------------------------------------------------------------

def test_tiles_carry_etag_and_versioned_urls_are_immutable(server, rasters):
    tj = _get(f"{server}/rasters/{rasters['chm']}/tilejson.json?rescale=0,40").json()
    tile = _centre_tile(17)
    url = tj["tiles"][0].format(z=17, y=tile.y, x=tile.x)
    assert "v=" in url and "rescale=0%2C40" in url
    r = _get(url)
    assert r.status_code == 200
    assert "immutable" in r.headers["Cache-Control"] and "public" in r.headers["Cache-Control"]
    etag = r.headers["ETag"]
    again = _get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other_style = _get(url.replace("rescale=0%2C40", "rescale=0%2C30"))
    assert other_style.headers["ETag"] != etag and other_style.content != r.content
    unversioned = _get(url.split("?")[0] + "?rescale=0,40")
    assert unversioned.headers["Cache-Control"] == "public, no-cache"
    assert unversioned.headers["ETag"] == etag and unversioned.content == r.content


# --- metadata ------------------------------------------------------------------------------

def test_tileset_metadata_and_tile_matrix_sets(server, rasters):
    rid = rasters["chm"]
    listing = _get(f"{server}/rasters/{rid}/tiles").json()
    assert {t["tileMatrixSetURI"].rsplit("/", 1)[1] for t in listing["tilesets"]} == \
        {"WebMercatorQuad", "WorldCRS84Quad"}
    ts = _get(f"{server}/rasters/{rid}/tiles/WebMercatorQuad").json()
    assert ts["dataType"] == "map" and ts["crs"].endswith("3857")
    tile = _centre_tile(17)
    limit = next(lim for lim in ts["tileMatrixSetLimits"] if lim["tileMatrix"] == "17")
    assert limit["minTileRow"] <= tile.y <= limit["maxTileRow"]
    assert limit["minTileCol"] <= tile.x <= limit["maxTileCol"]
    # the raster is 500 m across: about 5 tiles of ~306 m at z17 (49.3 N)
    assert 2 <= limit["maxTileCol"] - limit["minTileCol"] + 1 <= 4
    item = next(link for link in ts["links"] if link["rel"] == "item" and link["type"] == "image/png")
    href = item["href"].replace("{tileMatrix}", "17").replace("{tileRow}", str(tile.y)) \
        .replace("{tileCol}", str(tile.x))
    assert _get(href).status_code == 200
    tms = _get(f"{server}/tileMatrixSets/WorldCRS84Quad").json()
    assert tms["id"] == "WorldCRS84Quad" and tms["tileMatrices"][0]["matrixWidth"] == 2
    assert {t["id"] for t in _get(f"{server}/tileMatrixSets").json()["tileMatrixSets"]} == \
        {"WebMercatorQuad", "WorldCRS84Quad"}
    # WorldCRS84Quad tiles render the same raster
    crs84 = morecantile.tms.get("WorldCRS84Quad")
    t = crs84.tile(*pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
                   .transform(X0 + 250, Y0 - 250), 16)
    r = _get(f"{server}/rasters/{rid}/tiles/WorldCRS84Quad/16/{t.y}/{t.x}.png")
    assert r.status_code == 200 and _rgba(r.content)[..., 3].mean() > 100


def test_tilejson(server, rasters):
    tj = _get(f"{server}/rasters/{rasters['chm']}/tilejson.json").json()
    assert tj["tilejson"] == "3.0.0" and tj["scheme"] == "xyz"
    to_ll = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    west, north = to_ll.transform(X0, Y0)
    east, south = to_ll.transform(X0 + N * RES, Y0 - N * RES)
    assert tj["bounds"] == pytest.approx([west, south, east, north], abs=0.002)
    assert tj["minzoom"] == 0 and 18 <= tj["maxzoom"] <= 21
    assert tj["bounds"][0] < tj["center"][0] < tj["bounds"][2]
    rows, cols = np.mgrid[0:N, 0:N]
    valid = ~((rows < 100) & (cols < 100))
    p98 = np.percentile((0.02 * cols + 0.01 * rows)[valid], 98)
    assert tj["canopy:style"]["rescale"] == [0, np.ceil(p98)]      # whole metres over the 98th percentile


@pytest.fixture(scope="module")
def change_rasters(db_url, tmp_path_factory) -> dict[str, int]:
    """The two rasters `compare` writes, by its own writer: the change classes in five stripes
    of 200 columns (1..5, the no-data corner 0) and the CHM difference from -10 to +4 m."""
    from processes.lidar.change import ChangeResult, write_products
    rows, cols = np.mgrid[0:N, 0:N]
    classes = (1 + cols // 200).astype("uint8")
    classes[:100, :100] = 0
    diff = (-10 + 0.014 * cols).astype("float32")
    result = ChangeResult(diff=diff, classes=classes, transform=from_origin(X0, Y0, RES, RES), areas={},
                          trees={}, pairs=None)
    paths = write_products(result, tmp_path_factory.mktemp("change"), rasterio.crs.CRS.from_epsg(EPSG))
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name, visibility) VALUES ('change tiles', 'public') "
                               "RETURNING id").fetchone()[0]
        return {kind: conn.execute(
            "INSERT INTO rasters (project_id, kind, storage_uri, crs_epsg, resolution_m, footprint) "
            "VALUES (%s, %s, %s, %s, %s, ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)) RETURNING id",
            (project, kind, paths[kind].as_uri(), EPSG, RES, _footprint())).fetchone()[0]
            for kind in ("change", "chm_diff")}


def test_change_rasters_have_tilejson_tiles_and_wmts(server, change_rasters):
    """Every raster kind has a style: the change classes drawn in their class colours (the COG
    carries them as its colour table, with the class names), the CHM difference on a diverging
    colour map centred on 0 m."""
    from processes.lidar.change import CLASS_COLORS
    tile = _centre_tile(17)
    e, n = _TO_UTM.transform(*np.meshgrid(*[np.linspace(a, b, 256, endpoint=False) + (b - a) / 512
                                            for a, b in ((WM.xy_bounds(tile).left, WM.xy_bounds(tile).right),
                                                         (WM.xy_bounds(tile).top, WM.xy_bounds(tile).bottom))]))
    col = (e - X0) / RES
    for kind, rid in change_rasters.items():
        tj = _get(f"{server}/rasters/{rid}/tilejson.json")
        assert tj.status_code == 200, tj.text
        style = tj.json()["canopy:style"]
        r = _get(f"{server}/rasters/{rid}/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}.png")
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", r.text
        rgba = _rgba(r.content)
        assert (rgba[..., 3] == 255).mean() > 0.99
        assert _get(tj.json()["tiles"][0].format(z=17, y=tile.y, x=tile.x)).status_code == 200
        wmts = _get(f"{server}/rasters/{rid}/WMTSCapabilities.xml")
        assert wmts.status_code == 200 and b"<Capabilities" in wmts.content, wmts.text
        if kind == "change":
            assert [c["name"] for c in style["classes"]] == ["stable_canopy", "canopy_lost", "canopy_gained",
                                                               "growth", "no_canopy"]
            assert style["classes"][1]["color"] == list(CLASS_COLORS[2])
            # away from the stripes' edges each pixel is its class's colour
            clear = np.abs(col - np.rint(col / 200) * 200) > 2
            expected = np.array([CLASS_COLORS[c] for c in range(1, 6)])[(col[clear] // 200).astype(int)]
            assert clear.sum() > 10000 and np.array_equal(rgba[clear], expected)
        else:
            assert style["colormap"] == "rdbu" and style["rescale"] == [-10, 10]   # centred on 0 m
            red = rgba[..., 0].astype(int) - rgba[..., 2]          # -10..+4 m: red (loss) fades toward 0 m
            assert red[:, 10].mean() > red[:, -10].mean()
    cog = _get(f"{server}/rasters/{change_rasters['change']}/cog")
    with rasterio.MemoryFile(cog.content) as mem, mem.open() as ds:
        assert ds.colormap(1)[2] == CLASS_COLORS[2]
        assert json.loads(ds.tags(1)["classes"])["2"] == "canopy_lost"


def test_point_and_statistics(server, rasters):
    to_ll = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    e, n = X0 + 300.25, Y0 - 150.25                   # column 600, row 300
    lon, lat = to_ll.transform(e, n)
    r = _get(f"{server}/rasters/{rasters['metrics']}/point?lon={lon}&lat={lat}")
    assert r.status_code == 200, r.text
    assert r.json()["values"] == pytest.approx([0.02 * 600 + 0.01 * 300, 100 - 15.0, 7.5], abs=1e-4)
    lon, lat = to_ll.transform(X0 + 10, Y0 - 10)      # the no-data corner
    assert _get(f"{server}/rasters/{rasters['chm']}/point?lon={lon}&lat={lat}").json()["values"] == [None]
    stats = _get(f"{server}/rasters/{rasters['chm']}/statistics?bins=10").json()["bands"]["b1"]
    # the smallest valid height is at row 100, column 0 (the 100 x 100 corner is no data)
    assert stats["min"] == pytest.approx(1.0, abs=1e-4) and stats["max"] == pytest.approx(29.97, abs=0.1)
    counts, edges = stats["histogram"]
    assert len(counts) == 10 and len(edges) == 11 and sum(counts) == stats["count"]


def test_a_web_map_on_another_origin_reads_tiles_by_default(server, rasters):
    """Default settings (no CANOPY_CORS_ORIGINS): a page on any origin reads TileJSON, tiles,
    WMTS and the COG anonymously: `*`, no credentials, the headers it needs exposed."""
    page = {"Origin": "http://maps.elsewhere.test:8080"}
    root = f"{server}/rasters/{rasters['chm']}"
    tj = _get(f"{root}/tilejson.json", headers=page)
    tile = _get(tj.json()["tiles"][0].format(z=14, x=_centre_tile(14).x, y=_centre_tile(14).y), headers=page)
    cog = _get(f"{root}/cog", headers={**page, "Range": "bytes=0-99"})
    for r in (tj, tile, cog, _get(f"{root}/WMTSCapabilities.xml", headers=page),
              _get(f"{root}/tiles/WebMercatorQuad/0/0/0.png", headers=page),   # a 404 is readable too
              requests.head(f"{root}/cog", headers=page, timeout=10)):
        assert r.headers.get("Access-Control-Allow-Origin") == "*", (r.url, r.status_code, r.headers)
        assert "Access-Control-Allow-Credentials" not in r.headers
    assert tile.status_code == 200 and cog.status_code == 206
    exposed = {h.strip().lower() for h in cog.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"etag", "content-range", "accept-ranges", "link", "location"} <= exposed
    # a preflight (MapLibre asking for a range of the COG) is answered whatever the route
    pre = requests.options(f"{root}/cog", timeout=10, headers={
        **page, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"})
    assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "range" in pre.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" not in pre.headers["Access-Control-Allow-Headers"].lower()
    # a request with a token is not an anonymous read: no grant to an unconfigured origin
    private = _get(f"{server}/rasters/{rasters['private']}/tilejson.json",
                   headers={**page, "Authorization": "Bearer x"})
    assert "Access-Control-Allow-Origin" not in private.headers


# --- the COG over HTTP ---------------------------------------------------------------------

def _gdal_checksum(source: str) -> int:
    out = subprocess.run(["gdalinfo", "-checksum", source], capture_output=True, text=True, timeout=120,
                         env={"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_USE_HEAD": "YES",
                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("Checksum=")[1].split()[0])


def test_gdal_reads_the_cog_over_vsicurl(server, rasters, cogs):
    url = f"{server}/rasters/{rasters['chm']}/cog"
    assert _gdal_checksum(f"/vsicurl/{url}") == _gdal_checksum(str(cogs["chm"]))
    full = _get(url)
    assert full.status_code == 200
    assert hashlib.sha256(full.content).hexdigest() == hashlib.sha256(cogs["chm"].read_bytes()).hexdigest()
    assert full.headers["Accept-Ranges"] == "bytes" and full.headers["ETag"]


def test_cog_range_requests(server, rasters, cogs):
    url = f"{server}/rasters/{rasters['chm']}/cog"
    data = cogs["chm"].read_bytes()
    r = _get(url, headers={"Range": "bytes=100-1099"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    assert r.content == data[100:1100]
    tail = _get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == data[-16:]
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    etag = head.headers["ETag"]
    assert _get(url, headers={"If-None-Match": etag}).status_code == 304
    stale = _get(url, headers={"Range": "bytes=0-9", "If-Range": '"not-the-etag"'})
    assert stale.status_code == 200 and len(stale.content) == len(data)
    assert _get(url, headers={"Range": f"bytes={len(data) + 10}-"}).status_code == 416


# --- WMTS -----------------------------------------------------------------------------------

def test_gdal_wmts_driver_reads_the_capabilities(server, rasters, tmp_path):
    # GDAL splits WMTS connection strings on commas: the comma of rescale is percent-encoded
    url = f"{server}/rasters/{rasters['chm']}/WMTSCapabilities.xml?rescale=0%2C40&colormap=gray"
    env = {"PATH": "/usr/bin:/bin", "GDAL_DEFAULT_WMS_CACHE_PATH": str(tmp_path / "wmscache")}
    info = subprocess.run(["gdalinfo", f"WMTS:{url}"], capture_output=True, text=True, timeout=120, env=env)
    assert info.returncode == 0, info.stderr
    assert "Driver: WMTS" in info.stdout and "Band 4" in info.stdout
    # GDAL fetches tiles from the ResourceURL template: read the raster's area and decode heights
    to_ll = pyproj.Transformer.from_crs(EPSG, 3857, always_xy=True)
    (x1, x2), (y1, y2) = to_ll.transform([X0 + 200, X0 + 400], [Y0 - 200, Y0 - 400])
    out = tmp_path / "wmts.tif"
    run = subprocess.run(["gdal_translate", "-q", "-projwin", str(x1), str(y1), str(x2), str(y2),
                          f"WMTS:{url}", str(out)], capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stderr
    with rasterio.open(out) as src:
        grey, alpha = src.read(1).astype(float), src.read(4)
        rows, cols = np.mgrid[0:src.height, 0:src.width]
        xs, ys = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel())
    e, n = _TO_UTM.transform(np.array(xs), np.array(ys))
    truth = chm_height(e, n).reshape(grey.shape)
    assert np.all(alpha == 255)
    assert np.median(np.abs(grey / 255 * 40 - truth)) < 0.2


def test_owslib_reads_the_capabilities_and_tiles(server, rasters):
    from owslib.wmts import WebMapTileService
    rid = rasters["chm"]
    wmts = WebMapTileService(f"{server}/rasters/{rid}/WMTSCapabilities.xml")
    layer = wmts.contents[f"raster-{rid}"]
    assert set(layer.tilematrixsetlinks) == {"WebMercatorQuad", "WorldCRS84Quad"}
    assert "image/png" in layer.formats
    west, south, east, north = layer.boundingBoxWGS84
    assert west < -122.5 and north > 49.2
    matrix = wmts.tilematrixsets["WebMercatorQuad"].tilematrix["17"]
    assert matrix.matrixwidth == 2 ** 17
    tile = _centre_tile(17)
    limits = layer.tilematrixsetlinks["WebMercatorQuad"].tilematrixlimits["17"]
    assert limits.mintilerow <= tile.y <= limits.maxtilerow
    got = wmts.gettile(layer=f"raster-{rid}", tilematrixset="WebMercatorQuad", tilematrix="17",
                       row=tile.y, column=tile.x, format="image/png")
    direct = _get(f"{server}/rasters/{rid}/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}.png")
    assert np.array_equal(_rgba(got.read()), _rgba(direct.content))
    webp = WebMapTileService(f"{server}/rasters/{rid}/WMTSCapabilities.xml?tile_format=webp")
    assert webp.contents[f"raster-{rid}"].formats == ["image/webp"]
    got = webp.gettile(layer=f"raster-{rid}", tilematrixset="WebMercatorQuad", tilematrix="17",
                       row=tile.y, column=tile.x, format="image/webp")
    assert Image.open(io.BytesIO(got.read())).format == "WEBP"


# --- storage URIs --------------------------------------------------------------------------

def test_storage_uri_forms(tmp_path):
    from server.storage import LocalStorage
    from server.tiles.catalog import resolve
    root = LocalStorage(tmp_path / "storage")
    storage, key = resolve("rasters/12/chm.tif", root)
    assert storage.gdal_path(key) == str((root.root / "rasters/12/chm.tif").resolve())
    storage, key = resolve("file:///data/x%20y.tif", root)
    assert storage.gdal_path(key) == "/data/x y.tif"
    with pytest.raises(ValueError):
        resolve("../../etc/passwd", root)
    with pytest.raises(ValueError):
        resolve("s3://bucket/key.tif", root)


# --- vector tiles ---------------------------------------------------------------------------

# the centre of a z17 tile (~190 m across) no other test writes features at
_VB = WM.bounds(WM.tile(8.55, 47.05, 17))
VLON, VLAT = (_VB.left + _VB.right) / 2, (_VB.bottom + _VB.top) / 2


@pytest.fixture(scope="module")
def vector_features(db_url) -> dict:
    """A public plot, scan, 3 trees with crowns and a private tree, around (VLON, VLAT)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        public = conn.execute("INSERT INTO projects (name, visibility) VALUES ('mvt public', 'public') "
                              "RETURNING id").fetchone()[0]
        private = conn.execute("INSERT INTO projects (name, visibility) VALUES ('mvt private', 'private') "
                               "RETURNING id").fetchone()[0]
        d = 0.0005
        plot = conn.execute(
            "INSERT INTO plots (project_id, name, geom, metrics) VALUES (%s, 'mvt plot', "
            "ST_Multi(ST_MakeEnvelope(%s, %s, %s, %s, 4326)), '{\"h_mean\": 21.5}') RETURNING id",
            (public, VLON - d, VLAT - d, VLON + d, VLAT + d)).fetchone()[0]
        scan = conn.execute(
            "INSERT INTO scans (project_id, name, status, footprint) VALUES (%s, 'mvt scan', 'ready', "
            "ST_MakeEnvelope(%s, %s, %s, %s, 4326)) RETURNING id",
            (public, VLON - 2 * d, VLAT - 2 * d, VLON + 2 * d, VLAT + 2 * d)).fetchone()[0]
        trees = {}
        for i, height in enumerate((12.5, 18.0, 25.25)):
            lon, lat = VLON - d / 2 + i * d / 2, VLAT
            tree = conn.execute(
                "INSERT INTO trees (scan_id, project_id, geom, height_m) VALUES (%s, %s, "
                "ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s) RETURNING id",
                (scan, public, lon, lat, height)).fetchone()[0]
            conn.execute("INSERT INTO crowns (tree_id, scan_id, project_id, geom, area_m2) VALUES "
                         "(%s, %s, %s, ST_Buffer(ST_SetSRID(ST_MakePoint(%s, %s), 4326), 0.00003), 9.0)",
                         (tree, scan, public, lon, lat))
            trees[tree] = (lon, lat, height)
        hidden_scan = conn.execute("INSERT INTO scans (project_id, name, status) VALUES (%s, 'hidden', 'ready') "
                                   "RETURNING id", (private,)).fetchone()[0]
        hidden = conn.execute("INSERT INTO trees (scan_id, project_id, geom, height_m) VALUES (%s, %s, "
                              "ST_SetSRID(ST_MakePoint(%s, %s), 4326), 99) RETURNING id",
                              (hidden_scan, private, VLON, VLAT + d / 2)).fetchone()[0]
    return {"plot": plot, "scan": scan, "trees": trees, "hidden": hidden}


def _read_mvt(body: bytes, z: int, x: int, y: int, tmp_path: Path) -> dict[str, list[dict]]:
    """Layers of a tile as GeoJSON features in CRS84, read by GDAL's MVT driver (z/x/y.pbf naming
    georeferences a single tile)."""
    path = tmp_path / str(z) / str(x) / f"{y}.pbf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    layers = {}
    listing = subprocess.run(["ogrinfo", "-ro", "-q", str(path)], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    for line in listing.stdout.splitlines():
        name = line.split(":", 1)[1].split("(")[0].strip()
        out = tmp_path / f"{name}.geojson"
        run = subprocess.run(["ogr2ogr", "-f", "GeoJSON", "-t_srs", "EPSG:4326", str(out), str(path), name],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        layers[name] = json.loads(out.read_text())["features"]
    return layers


def test_vector_tiles_of_trees_plots_crowns_and_scans(server, vector_features, tmp_path):
    z = 17
    tile = WM.tile(VLON, VLAT, z)
    got = {}
    for collection in ("plots", "scans", "trees", "crowns"):
        r = _get(f"{server}/collections/{collection}/tiles/WebMercatorQuad/{z}/{tile.y}/{tile.x}")
        assert r.status_code == 200, (collection, r.text)
        assert r.headers["Content-Type"] == "application/vnd.mapbox-vector-tile"
        layers = _read_mvt(r.content, z, tile.x, tile.y, tmp_path / collection)
        assert list(layers) == [collection]
        got[collection] = layers[collection]
    trees = {f["properties"]["mvt_id"] if "mvt_id" in f["properties"] else f["id"]: f for f in got["trees"]}
    assert set(trees) == set(vector_features["trees"])             # the private tree is not there
    for tree_id, (lon, lat, height) in vector_features["trees"].items():
        feature = trees[tree_id]
        assert feature["properties"]["height_m"] == pytest.approx(height, abs=1e-3)
        # 4096 units over a ~300 m tile: positions within a few decimetres
        assert feature["geometry"]["coordinates"] == pytest.approx([lon, lat], abs=2e-6)
    plot = got["plots"][0]
    assert plot["properties"]["name"] == "mvt plot" and plot["properties"]["h_mean"] == 21.5
    assert plot["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert got["scans"][0]["properties"]["status"] == "ready"
    assert len(got["crowns"]) == 3 and got["crowns"][0]["geometry"]["type"] == "Polygon"


def test_far_out_trees_are_thinned_to_the_tallest_per_cell(server, vector_features, tmp_path):
    """At z13 (cells of ~47 m here) the three trees 19 m apart share at most two cells, and
    the tile keeps the tallest of each; from z16 every tree is there."""
    heights = {h for _, _, h in vector_features["trees"].values()}
    for z, expected in ((13, None), (16, heights)):
        tile = WM.tile(VLON, VLAT, z)
        r = _get(f"{server}/collections/trees/tiles/WebMercatorQuad/{z}/{tile.y}/{tile.x}")
        assert r.status_code == 200, r.text
        got = {round(f["properties"]["height_m"], 2) for f in _read_mvt(r.content, z, tile.x, tile.y,
                                                                          tmp_path / str(z))["trees"]}
        if expected is None:
            assert max(heights) in got and len(got) < len(heights) and 99 not in got
        else:
            assert got == expected


def test_vector_tiles_errors_and_empty_tiles(server, vector_features):
    tile = WM.tile(VLON, VLAT, 17)
    base = f"{server}/collections"
    # far from any feature: 204; trees below their minzoom: 204
    assert _get(f"{base}/trees/tiles/WebMercatorQuad/17/0/0").status_code == 204
    low = WM.tile(VLON, VLAT, 8)
    assert _get(f"{base}/trees/tiles/WebMercatorQuad/8/{low.y}/{low.x}").status_code == 204
    assert _get(f"{base}/plots/tiles/WebMercatorQuad/8/{low.y}/{low.x}").status_code == 200
    for url, status in ((f"{base}/rasters/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}", 404),
                        (f"{base}/nope/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}", 404),
                        (f"{base}/trees/tiles/WorldCRS84Quad/17/{tile.y}/{tile.x}", 404),
                        (f"{base}/trees/tiles/WebMercatorQuad/17/{tile.y}/x", 400),
                        (f"{base}/trees/tiles/WebMercatorQuad/40/0/0", 404),
                        (f"{base}/trees/tiles/WebMercatorQuad/17/{tile.y}/{tile.x}.png", 400)):
        r = _get(url)
        assert r.status_code == status, (url, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"
    meta = _get(f"{base}/trees/tiles/WebMercatorQuad").json()
    assert meta["dataType"] == "vector" and meta["layers"][0]["minTileMatrix"] == "13"
    item = next(link for link in meta["links"] if link["rel"] == "item")["href"]
    r = _get(item.replace("{tileMatrix}", "17").replace("{tileRow}", str(tile.y))
             .replace("{tileCol}", str(tile.x)))
    assert r.status_code == 200 and r.content
    again = _get(item.replace("{tileMatrix}", "17").replace("{tileRow}", str(tile.y))
                 .replace("{tileCol}", str(tile.x)), headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304

"""The crowns and ground cover of :mod:`.synthetic`'s forests: crown shapes from height,
the crown surfaces (cones, broadleaf domes with lobes, and with ``ROUGH`` whorls, branch
tips, co-dominant leaders and gaps), the tallest neighbouring crown near each apex, and the
herb layer.  Written by hand for the same reason as :mod:`.synthetic`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def _unit(key: np.ndarray, j: int) -> np.ndarray:
    """Uniform numbers in [0, 1), the ``j``-th of each key (splitmix64).  A tree's roughness is
    a function of its ``rough_key``, not of a stream: a rescan of the same trees (``trees=``,
    grown or thinned) sees the same whorls, leaders and gaps."""
    with np.errstate(over="ignore"):  # the hash wraps around 2**64 on purpose
        z = np.asarray(key, dtype=np.uint64) + np.uint64((j + 1) * 0x9E3779B97F4A7C15 % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def crown_shapes(rng, h, broadleaf, scale=1.0):
    """Crown radius and length from height (allometry with scatter)."""
    r = scale * np.where(broadleaf, 0.22 * h, 0.13 * h) * rng.uniform(0.85, 1.15, h.shape)
    length = scale * np.where(broadleaf, 0.45 * h, 0.55 * h) * rng.uniform(0.9, 1.1, h.shape)
    return r, length


class Crowns:
    """Evaluates the crown surfaces (height above ground) of a set of trees."""

    def __init__(self, trees: dict[str, np.ndarray], rng):
        self.t = trees
        n = len(trees["x"])
        # broadleaf lobes: 4 sub-crowns around the top, lower than the top
        self.lobes = []
        for i in np.flatnonzero(trees["broadleaf"]):
            R = trees["crown_radius"][i]
            H = trees["height"][i]
            ang = rng.uniform(0, 2 * np.pi) + np.arange(4) * np.pi / 2 + rng.uniform(-0.3, 0.3, 4)
            off = R * rng.uniform(0.45, 0.6, 4)
            self.lobes.append((i, trees["x"][i] + off * np.cos(ang), trees["y"][i] + off * np.sin(ang),
                               R * rng.uniform(0.3, 0.4, 4), H - rng.uniform(0.8, 1.6, 4)))
        self.n = n
        self.rough: dict | None = None  # see roughen(); None: the smooth crowns of old

    def roughen(self, branches: float, leaders: float, gaps: float) -> None:
        """Give every tree its branch-level relief, and broadleaves their leaders and gaps.

        Everything is drawn from the trees' ``rough_key`` (see :func:`_unit`) and scaled by
        the tree's current size, so a grown rescan keeps its crowns' character.  The shapes
        themselves are in :meth:`_rough_tree` and :meth:`_gaps`."""
        t, n = self.t, self.n
        key = t["rough_key"]
        u = [_unit(key, j) for j in range(35)]
        bl = np.asarray(t["broadleaf"], bool)
        R, H = t["crown_radius"], t["height"]
        # branch relief: conifer whorls every 0.5-1 m of depth with 6-9 branches each;
        # broadleaf leaf clumps in rings every 0.8-1.4 m with 5-8 clumps per ring
        period = np.where(bl, 0.8 + 0.6 * u[0], 0.5 + 0.5 * u[0])
        count = np.where(bl, 5.0, 6.0) + np.floor(4 * u[2])
        # leaders: 2-3 co-dominant tops 1-2.5 m from the apex (at most 0.55 R), 0.5-2 m below it
        nlead = np.where(bl & (u[4] < leaders), 2 + (u[5] < 0.5), 0)
        j = np.arange(3)
        ang = (2 * np.pi * u[6])[:, None] + j * 2 * np.pi / np.maximum(nlead, 1)[:, None] \
            + 0.5 * (np.stack(u[7:10], 1) - 0.5)
        dist = np.minimum(1.0 + 1.5 * np.stack(u[10:13], 1), 0.55 * R[:, None])
        drop = 0.5 + 1.5 * np.stack(u[13:16], 1)
        ldx, ldy = dist * np.cos(ang), dist * np.sin(ang)
        # how far each leader's top sits below the crown without leaders (it ends at H - drop,
        # or on that crown where it is lower)
        lift = np.zeros((n, 3))
        for i in np.flatnonzero(nlead):
            zs = self._smooth(i, ldx[i], ldy[i], 0.0)[0]
            lift[i] = np.maximum(zs - (H[i] - drop[i]), 0.0)
        lift[j[None] >= nlead[:, None]] = 0.0
        # the crown around the tops sinks by domes of curvature `steep` (m/m²) that level off
        # `sag` metres down: deep and steep enough that the apex's dome has sunk 0.3 m below
        # each leader's top where that leader stands (a saddle between them)
        sag = lift.max(axis=1) + 0.5 + 1.0 * u[17]
        need = (lift + 0.3) / sag[:, None]
        need = -sag[:, None] * np.log(1.0 - np.minimum(need, 0.95)) / np.maximum(dist, 0.3) ** 2
        steep = np.maximum(1.0 + 1.0 * u[16], np.where(j[None] < nlead[:, None], need, 0.0).max(axis=1))
        # gaps: 2-4 holes 2-5 m deep, together `gaps` of the crown's area, whose edge stays
        # 1 m or more from the apex
        ngap = np.where(bl & (gaps > 0), 2 + np.floor(3 * u[18]), 0).astype(int)
        g = np.arange(4)
        grad = R[:, None] * np.sqrt(gaps / np.maximum(ngap, 1))[:, None] * (0.8 + 0.4 * np.stack(u[19:23], 1))
        room = 0.9 * R[:, None] - grad - 1.0
        gdist = grad + 1.0 + np.maximum(room, 0.0) * np.stack(u[23:27], 1)
        gang = 2 * np.pi * np.stack(u[27:31], 1)
        gok = (g[None] < ngap[:, None]) & (room > 0)
        self.rough = dict(
            n=n, branches=branches, period=period, phase=u[1], count=count, psi=u[3],
            nlead=nlead.astype(int), ldx=ldx, ldy=ldy, lift=lift, steep=steep, sag=sag,
            gok=gok, gdx=gdist * np.cos(gang), gdy=gdist * np.sin(gang), grad=grad,
            gdepth=2.0 + 3.0 * np.stack(u[31:35], 1),
        )

    def add_saplings(self, sap: dict[str, np.ndarray]) -> None:
        """Scan saplings too: small smooth crowns after the trees (no lobes, no roughness)."""
        m = len(sap["x"])
        if not m:
            return
        extra = dict(sap, lean_dx=np.zeros(m), lean_dy=np.zeros(m), outline_amp=np.zeros(m),
                     outline_k=np.ones(m), outline_phase=np.zeros(m))
        self.t = {k: np.concatenate([np.asarray(self.t[k])[: self.n], extra[k]])
                  for k in ("x", "y", "height", "crown_radius", "crown_length", "broadleaf", "lean_dx", "lean_dy",
                            "outline_amp", "outline_k", "outline_phase")}
        self.n += m

    def reach(self, i: int) -> float:
        """How far from its apex tree ``i``'s crown extends."""
        t = self.t
        return t["crown_radius"][i] * (1 + t["outline_amp"][i]) + np.hypot(t["lean_dx"][i], t["lean_dy"][i])

    def _smooth(self, i: int, dx: np.ndarray, dy: np.ndarray, fp: float):
        """The smooth crown of tree ``i`` (see :meth:`tree_surface`): height, the share ``s``
        of the way from apex to outline (> 1: outside), distance and azimuth from the apex."""
        t = self.t
        R, H, L = t["crown_radius"][i], t["height"][i], t["crown_length"][i]
        ex, ey = t["lean_dx"][i], t["lean_dy"][i]  # apex minus crown centre
        rho = np.hypot(dx, dy)
        ux, uy = dx / np.maximum(rho, 1e-9), dy / np.maximum(rho, 1e-9)
        theta = np.arctan2(uy, ux)
        rad = R * (1 + t["outline_amp"][i] * np.cos(t["outline_k"][i] * theta + t["outline_phase"][i]))
        eu = ex * ux + ey * uy
        edge = -eu + np.sqrt(np.maximum(eu * eu - (ex * ex + ey * ey) + rad * rad, 0.0))  # apex to outline
        s = np.maximum(rho - fp, 0.0) / np.maximum(edge, 1e-9)
        if t["broadleaf"][i]:
            z = (H - L * 0.6) + L * 0.6 * np.sqrt(np.clip(1.0 - s**2, 0.0, None))
        else:
            z = H - L * s
        return z, s, rho, theta

    def tree_surface(self, i: int, dx: np.ndarray, dy: np.ndarray, fp: float) -> np.ndarray:
        """Surface of tree ``i`` seen by a beam of radius ``fp`` at offsets dx, dy from its apex
        (NaN outside).  The crown's outline is a circle around the stem, waved by a harmonic
        of its azimuth; a leaning stem puts the apex off the outline's centre, and the
        surface falls along each ray from the apex to the outline (smooth: in a rough forest
        :meth:`surface` gives it, and its lobes, their relief)."""
        z, s, _, _ = self._smooth(i, dx, dy, fp)
        return np.where(s <= 1, z, np.nan)

    def _rough_tree(self, i: int, z: np.ndarray, dx: np.ndarray, dy: np.ndarray, fp: float) -> np.ndarray:
        """The smooth surface ``z`` of tree ``i`` (its crown and lobes, at offsets dx, dy from
        the apex) made rough.  Every change is bounded by the depth ``d`` below the apex
        (relief within +-d/2), so the apex stays the tree's highest point, and nothing
        sinks below the crown's base (where the returns from inside the crown stop).

        Leaders: the crown sinks around its apex and around each leader's top by domes
        (curvature ``steep``) that level off ``sag`` metres down, each leader's ``lift``
        lower, so each leader is a sub-crown with a saddle towards the apex.  Branches: a conifer's surface is a
        staircase of whorls down its depth (each whorl's branches flatter than the cone,
        their tips up to ``a`` proud, a drop to the next whorl), and only the branches
        (6-9 per whorl, turned from one whorl to the next) stand out of the lowered
        surface between them; a broadleaf has leaf clumps in rings, half as high."""
        r, t = self.rough, self.t
        H, L, R = t["height"][i], t["crown_length"][i], t["crown_radius"][i]
        rho = np.maximum(np.hypot(dx, dy) - fp, 0.0)
        theta = np.arctan2(dy, dx)
        z = np.where(rho > 0, np.minimum(z, H), H)  # exactly H at the apex, never above (rounding)
        d = H - z
        if r["nlead"][i]:
            k, M = r["steep"][i], r["sag"][i]
            m = M * (1.0 - np.exp(-k * rho**2 / M))
            for j in range(r["nlead"][i]):
                dl = np.maximum(np.hypot(dx - r["ldx"][i, j], dy - r["ldy"][i, j]) - fp, 0.0)
                m = np.minimum(m, r["lift"][i, j] + M * (1.0 - np.exp(-k * dl**2 / M)))
            z, d = z - m, d + m
        if r["branches"] > 0:
            conifer = not t["broadleaf"][i]
            c = d if conifer else rho  # conifers: depth below the apex; broadleaves: distance
            a = r["branches"] * (1.0 if conifer else 0.5)
            amp = np.minimum(a * (1 / 3 + 2 / 3 * np.minimum(c / (0.5 * (L if conifer else R)), 1.0)), 0.5 * d)
            u = c / r["period"][i] + r["phase"][i]
            w = np.floor(u) if conifer else np.floor(u + 0.5)  # whorl (ring) index
            f = u - w
            tip = (0.5 + 0.5 * np.cos(r["count"][i] * (theta - 2 * np.pi * (r["psi"][i] + 0.618034 * w)))) ** 2
            prof = f if conifer else 0.5 + 0.5 * np.cos(2 * np.pi * f)  # staircase / smooth rings
            z = z + amp * (2.0 * prof * tip - 1.0)
        return np.maximum(z, H - L)  # nothing sinks below the crown's base

    def _gaps(self, i: int, dx: np.ndarray, dy: np.ndarray, z: np.ndarray, fp: float) -> np.ndarray:
        """Tree ``i``'s surface ``z`` with its gaps: steep-walled holes 2-5 m deep (not below
        the crown's base), narrowed by the beam's radius."""
        r, t = self.rough, self.t
        floor = t["height"][i] - t["crown_length"][i]
        for g in np.flatnonzero(r["gok"][i]):
            dist = np.hypot(dx - r["gdx"][i, g], dy - r["gdy"][i, g]) + fp
            hole = np.clip(3.0 * (1.0 - (dist / r["grad"][i, g]) ** 2), 0.0, 1.0) * r["gdepth"][i, g]
            z = np.minimum(z, np.maximum(z - hole, floor))
        return z

    def lobe_surface(self, k: int, x: np.ndarray, y: np.ndarray, fp: float) -> np.ndarray:
        i, lx, ly, lr, lh = self.lobes[k]
        out = np.full(x.shape, np.nan)
        for j in range(4):
            d = np.maximum(np.hypot(x - lx[j], y - ly[j]) - fp, 0.0)
            a = 1.0 - (d / lr[j]) ** 2
            z = lh[j] - 1.2 * lr[j] + 1.2 * lr[j] * np.sqrt(np.clip(a, 0, None))
            out = np.fmax(out, np.where(a >= 0, z, np.nan))
        return out

    def surface(self, x: np.ndarray, y: np.ndarray, fp: float = 0.0,
                exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Highest crown surface above ground and the index of the tree it belongs to (-1: none);
        ``exclude``: for each point, a tree left out there."""
        shape = np.shape(x)
        x = np.asarray(x, dtype=float).ravel()
        y = np.asarray(y, dtype=float).ravel()
        top = np.zeros(x.shape)
        owner = np.full(x.shape, -1, dtype=np.int64)
        order = np.argsort(x, kind="stable")
        xs = x[order]
        t = self.t
        lobe_of = {lb[0]: k for k, lb in enumerate(self.lobes)}
        rough_n = self.rough["n"] if self.rough is not None else 0
        gapped = set(np.flatnonzero(self.rough["gok"].any(axis=1)).tolist()) if self.rough is not None else ()
        for i in range(self.n):
            R = self.reach(i) + fp + 0.01
            lo, hi = np.searchsorted(xs, [t["x"][i] - R, t["x"][i] + R])
            if hi <= lo:
                continue
            idx = order[lo:hi]
            idx = idx[np.abs(y[idx] - t["y"][i]) <= R]
            if not len(idx):
                continue
            z = self.tree_surface(i, x[idx] - t["x"][i], y[idx] - t["y"][i], fp)
            if i in lobe_of:
                z = np.fmax(z, self.lobe_surface(lobe_of[i], x[idx], y[idx], fp))
            if i < rough_n:  # the whole crown, lobes included, takes the relief, then the gaps
                z = self._rough_tree(i, z, x[idx] - t["x"][i], y[idx] - t["y"][i], fp)
                if i in gapped:
                    z = self._gaps(i, x[idx] - t["x"][i], y[idx] - t["y"][i], z, fp)
            if exclude is not None:
                z = np.where(exclude[idx] == i, np.nan, z)
            better = np.nan_to_num(z, nan=-1.0) > top[idx]
            top[idx[better]] = z[better]
            owner[idx[better]] = i
        return top.reshape(shape), owner.reshape(shape)


def others_within(crowns: Crowns, trees: dict[str, np.ndarray], radius: float = 1.0,
                   step: float = 0.05) -> np.ndarray:
    """For each tree, the highest surface of the other crowns within ``radius`` of its apex
    (sampled every ``step``; the tree's own crown is left out, as it is never above its apex).
    Crown edges are cliffs: a crown that cuts into the disk by less than ``step`` still
    crosses the rings just outside it, sampled every 2 cm."""
    off = np.arange(-radius, radius + 1e-9, step)
    ox, oy = np.meshgrid(off, off)
    disk = np.hypot(ox, oy) <= radius
    ox, oy = [ox[disk]], [oy[disk]]
    for r in (radius, radius + step / 2, radius + step):
        a = np.linspace(0, 2 * np.pi, int(np.ceil(2 * np.pi * r / 0.02)), endpoint=False)
        ox.append(r * np.cos(a))
        oy.append(r * np.sin(a))
    ox, oy = np.concatenate(ox), np.concatenate(oy)
    n = len(trees["x"])
    out = np.zeros(n)
    chunk = max(1, 400_000 // len(ox))
    for a in range(0, n, chunk):
        i = np.arange(a, min(n, a + chunk))
        qx = (trees["x"][i, None] + ox[None]).ravel()
        qy = (trees["y"][i, None] + oy[None]).ravel()
        z = crowns.surface(qx, qy, exclude=np.repeat(i, len(ox)))[0]
        out[i] = z.reshape(len(i), -1).max(axis=1)
    return out


def herb_layer(rng, bounds, share: float) -> Callable:
    """Herbs and grass over ``share`` of the ground: a patchy field (value noise on 2 m and
    0.7 m lattices) whose highest ``share`` grows 0.1-0.8 m tall."""
    minx, miny, maxx, maxy = bounds
    lattices = []
    for cell, weight in ((2.0, 0.7), (0.7, 0.3)):
        lattices.append((cell, weight, rng.random((int(np.ceil((maxy - miny) / cell)) + 2,
                                                   int(np.ceil((maxx - minx) / cell)) + 2))))

    def field(px, py):
        v = np.zeros(np.shape(px))
        for cell, weight, lat in lattices:
            gx = np.clip((np.asarray(px) - minx) / cell, 0, lat.shape[1] - 1.001)
            gy = np.clip((np.asarray(py) - miny) / cell, 0, lat.shape[0] - 1.001)
            c, r = gx.astype(np.int64), gy.astype(np.int64)
            fx, fy = gx - c, gy - r
            v += weight * ((lat[r, c] * (1 - fx) + lat[r, c + 1] * fx) * (1 - fy)
                           + (lat[r + 1, c] * (1 - fx) + lat[r + 1, c + 1] * fx) * fy)
        return v

    sample = field(rng.uniform(minx, maxx, 20_000), rng.uniform(miny, maxy, 20_000))
    lo, hi = np.quantile(sample, [1.0 - min(share, 1.0), 0.995])

    def herbs(px, py):
        v = field(px, py)
        return np.where(v > lo, 0.1 + 0.7 * np.clip((v - lo) / max(hi - lo, 1e-9), 0.0, 1.0), 0.0)

    return herbs

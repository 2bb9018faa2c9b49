"""Scene primitives: the ``Scene`` collector (cuboids, cylinders, occupancy), local frames, wall placement."""
from __future__ import annotations

from labelreg.data.synthetic.classes import RAW
from labelreg.data.synthetic.materials import Mat

BOX, CYL, _PLANE = 0, 1, 2


class Scene:
    """Collects primitives (cuboids, vertical cylinders) with instance and material."""

    def __init__(self, rng, room_w, room_d, room_h, z_front):
        self.rng = rng
        self.W, self.D, self.Hr, self.zf = room_w, room_d, room_h, z_front
        self.xl, self.xr = -room_w / 2.0, room_w / 2.0
        # prim arrays: kind, p0 (3), p1 (3), instance, material
        self.kind: list[int] = []
        self.p0: list[tuple] = []
        self.p1: list[tuple] = []
        self.pinst: list[int] = []
        self.pmat: list[int] = []
        self.mats: list[Mat] = []
        self.inst_raw: list[int] = [0]  # instance 0 unused
        self.floor_rects: list[tuple] = []  # (x0, z0, x1, z1) occupied floor
        self.wall_rects: dict[str, list[tuple]] = {"back": [], "left": [], "right": []}  # (s0, s1, y0, y1)

    # --- bookkeeping
    def instance(self, raw_name: str | None) -> int:
        self.inst_raw.append(0 if raw_name is None else RAW[raw_name])
        return len(self.inst_raw) - 1

    def material(self, mat: Mat) -> int:
        self.mats.append(mat)
        return len(self.mats) - 1

    def _add(self, kind, p0, p1, inst, mat):
        self.kind.append(kind)
        self.p0.append(tuple(p0))
        self.p1.append(tuple(p1))
        self.pinst.append(inst)
        self.pmat.append(mat)

    def box(self, fr, a0, a1, b0, b1, y0, y1, inst, mat):
        """Cuboid given in a frame's local coordinates (a along, b out from the wall, y up)."""
        xs, zs = [], []
        for a in (a0, a1):
            for b in (b0, b1):
                x, z = fr.to_world(a, b)
                xs.append(x)
                zs.append(z)
        self._add(BOX, (min(xs), y0, min(zs)), (max(xs), y1, max(zs)), inst, mat)

    def cyl(self, fr, a, b, r, y0, y1, inst, mat):
        x, z = fr.to_world(a, b)
        self._add(CYL, (x, y0, z), (r, y1, 0.0), inst, mat)

    # --- occupancy
    def floor_free(self, rect, margin=0.05) -> bool:
        x0, z0, x1, z1 = rect
        if x0 < self.xl - 1e-6 or x1 > self.xr + 1e-6 or z1 > self.D + 1e-6 or z0 < 0.9:
            return False
        for (u0, w0, u1, w1) in self.floor_rects:
            if x0 < u1 + margin and u0 < x1 + margin and z0 < w1 + margin and w0 < z1 + margin:
                return False
        return True

    def wall_free(self, wall, s0, s1, y0, y1, margin=0.05) -> bool:
        for (t0, t1, v0, v1) in self.wall_rects[wall]:
            if s0 < t1 + margin and t0 < s1 + margin and y0 < v1 + margin and v0 < y1 + margin:
                return False
        return True

    def wall_range(self, wall) -> tuple[float, float]:
        if wall == "back":
            return self.xl, self.xr
        return max(1.2, self.D * 0.35), self.D  # side walls: the part the camera can see


class Frame:
    """Local frame on the floor: origin (ox, oz), unit 'a' (along) and 'b' (front) axes."""

    __slots__ = ("ox", "oz", "ax", "az", "bx", "bz")

    def __init__(self, ox, oz, a, b):
        self.ox, self.oz = ox, oz
        self.ax, self.az = a
        self.bx, self.bz = b

    def to_world(self, a, b):
        return self.ox + a * self.ax + b * self.bx, self.oz + a * self.az + b * self.bz

    def rect(self, a0, a1, b0, b1):
        pts = [self.to_world(a, b) for a in (a0, a1) for b in (b0, b1)]
        xs = [p[0] for p in pts]
        zs = [p[1] for p in pts]
        return min(xs), min(zs), max(xs), max(zs)


def wall_frame(sc: Scene, wall: str, s: float) -> Frame:
    """Frame whose b axis points from the wall into the room; a runs along the wall; a=0 at s."""
    if wall == "back":
        return Frame(s, sc.D, (1.0, 0.0), (0.0, -1.0))
    if wall == "left":
        return Frame(sc.xl, s, (0.0, 1.0), (1.0, 0.0))
    return Frame(sc.xr, s, (0.0, 1.0), (-1.0, 0.0))


DIRS = [(0.0, -1.0), (0.0, 1.0), (1.0, 0.0), (-1.0, 0.0)]


def free_frame(x, z, facing) -> Frame:
    bx, bz = facing
    return Frame(x, z, (-bz, bx), facing)


def place_against_wall(sc: Scene, width, depth, height, walls=("back", "left", "right"), tries=25,
                        s_range=None):
    """Find a free spot against one of ``walls``; returns (frame, wall) with a in [-w/2, w/2]."""
    rng = sc.rng
    for _ in range(tries):
        wall = walls[int(rng.integers(len(walls)))]
        lo, hi = sc.wall_range(wall) if s_range is None else s_range
        if hi - lo < width + 0.1:
            continue
        s = rng.uniform(lo + width / 2 + 0.05, hi - width / 2 - 0.05)
        fr = wall_frame(sc, wall, s)
        rect = fr.rect(-width / 2, width / 2, 0.0, depth)
        if sc.floor_free(rect) and sc.wall_free(wall, s - width / 2, s + width / 2, 0.0, height):
            return fr, wall, s
    return None


def claim(sc: Scene, fr: Frame, wall, s, a0, a1, b0, b1, height):
    sc.floor_rects.append(fr.rect(a0, a1, b0, b1))
    if wall is not None:
        sc.wall_rects[wall].append((s + a0, s + a1, 0.0, height))

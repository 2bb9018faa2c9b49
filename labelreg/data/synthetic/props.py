"""Other room items: doors, windows and curtains, pictures, floor boxes and bags, plants, people, rugs."""
from __future__ import annotations

from labelreg.data.synthetic.materials import (ART, FABRIC, GLASS, PAINT, Mat, brownish_paint, fabric,
                                               hsv, metal, paint, pick, plastic, wood)
from labelreg.data.synthetic.scene import claim, DIRS, Frame, free_frame, place_against_wall, wall_frame

def wall_item(sc, kind):
    """Door, window (+curtains), picture/poster on a wall."""
    rng = sc.rng
    for _ in range(20):
        wall = rng.choice(["back", "left", "right"])
        lo, hi = sc.wall_range(wall)
        if kind == "door":
            w, y0, y1 = rng.uniform(0.8, 0.95), 0.0, rng.uniform(2.0, 2.1)
        elif kind == "window":
            w = rng.uniform(0.7, 1.6)
            y0 = rng.uniform(0.75, 1.05)
            y1 = min(sc.Hr - 0.15, y0 + rng.uniform(0.9, 1.4))
        else:
            w = rng.uniform(0.3, 1.0)
            hgt = rng.uniform(0.3, 0.8)
            yc = rng.uniform(1.3, 1.8)
            y0, y1 = yc - hgt / 2, min(sc.Hr - 0.1, yc + hgt / 2)
        if hi - lo < w + 0.2:
            continue
        s = rng.uniform(lo + w / 2 + 0.1, hi - w / 2 - 0.1)
        margin = 0.35 if kind == "window" else 0.05
        if not sc.wall_free(wall, s - w / 2 - margin, s + w / 2 + margin, y0, y1):
            continue
        fr = wall_frame(sc, wall, s)
        if kind == "door" and not sc.floor_free(fr.rect(-w / 2, w / 2, 0.0, 0.9)):
            continue
        break
    else:
        return False
    sc.wall_rects[wall].append((s - w / 2 - (0.3 if kind == "window" else 0.0),
                                s + w / 2 + (0.3 if kind == "window" else 0.0), y0, y1))
    if kind == "door":
        inst = sc.instance("door")
        sc.floor_rects.append(fr.rect(-w / 2, w / 2, 0.0, 0.6))  # keep the swing area clear
        m = sc.material(pick(rng, [(0.5, wood), (0.5, paint)]))
        fm = sc.material(paint(rng, light=True)) if rng.random() < 0.5 else m
        sc.box(fr, -w / 2 - 0.06, w / 2 + 0.06, 0.0, 0.02, 0.0, y1 + 0.06, inst, fm)  # frame
        sc.box(fr, -w / 2, w / 2, 0.0, 0.04, 0.0, y1, inst, m)
        km = sc.material(metal(rng))
        ka = w / 2 - 0.1 if rng.random() < 0.5 else -w / 2 + 0.08
        sc.box(fr, ka, ka + 0.03, 0.04, 0.1, 0.98, 1.02, inst, km)
    elif kind == "window":
        inst = sc.instance("window")
        fm = sc.material(pick(rng, [(0.6, lambda r: paint(r, light=True)), (0.4, wood)]))
        sky = hsv(rng.uniform(0.52, 0.62), rng.uniform(0.05, 0.45), rng.uniform(0.8, 1.0))
        gm = sc.material(Mat(GLASS, sky, emissive=True))
        sc.box(fr, -w / 2, w / 2, 0.0, 0.01, y0, y1, inst, gm)
        ft = 0.05
        sc.box(fr, -w / 2 - ft, w / 2 + ft, 0.0, 0.05, y0 - ft, y0, inst, fm)  # sill / frame
        sc.box(fr, -w / 2 - ft, w / 2 + ft, 0.0, 0.04, y1, y1 + ft, inst, fm)
        sc.box(fr, -w / 2 - ft, -w / 2, 0.0, 0.04, y0, y1, inst, fm)
        sc.box(fr, w / 2, w / 2 + ft, 0.0, 0.04, y0, y1, inst, fm)
        if w > 1.0:
            sc.box(fr, -0.02, 0.02, 0.0, 0.03, y0, y1, inst, fm)
        if rng.random() < 0.5:
            sc.box(fr, -w / 2, w / 2, 0.0, 0.03, (y0 + y1) / 2 - 0.02, (y0 + y1) / 2 + 0.02, inst, fm)
        if rng.random() < 0.5:  # curtains
            cm = sc.material(fabric(rng))
            cy0 = 0.02 if rng.random() < 0.5 else y0 - 0.2
            for side in (-1, 1):
                ci = sc.instance("curtain")
                a0 = side * (w / 2 + 0.08)
                cw = rng.uniform(0.2, 0.4)
                sc.box(fr, min(a0, a0 + side * cw), max(a0, a0 + side * cw) * 1.0, 0.06, 0.14,
                       cy0, min(sc.Hr - 0.02, y1 + 0.15), ci, cm)
                if cy0 < 0.1:
                    sc.floor_rects.append(fr.rect(min(a0, a0 + side * cw), max(a0, a0 + side * cw), 0.0, 0.15))
    else:
        inst = sc.instance(rng.choice(["picture", "picture", "poster"]))
        fm = sc.material(pick(rng, [(0.5, wood), (0.3, plastic), (0.2, metal)]))
        cols = [hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.95)) for _ in range(2)]
        am = sc.material(Mat(ART, cols[0], cols[1], scale=rng.uniform(0.5, 3.0), orient=int(rng.integers(2))))
        sc.box(fr, -w / 2, w / 2, 0.0, 0.025, y0, y1, inst, fm)
        sc.box(fr, -w / 2 + 0.03, w / 2 - 0.03, 0.025, 0.03, y0 + 0.03, y1 - 0.03, inst, am)
    return True


def floor_box(sc, labeled=True):
    rng = sc.rng
    w, d, h = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.5)
    if not labeled:
        w, d, h = w * 0.6, d * 0.6, h * 0.6
    if rng.random() < 0.6:
        spot = place_against_wall(sc, w, d, h, tries=8)
        if spot is None:
            return False
        fr, wall, s = spot
        b0 = 0.02
        claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, d + b0, h)
    else:
        for _ in range(8):
            x = rng.uniform(sc.xl + w, sc.xr - w)
            z = rng.uniform(1.2, sc.D - d)
            fr = Frame(x, z, (1.0, 0.0), (0.0, -1.0))
            if sc.floor_free(fr.rect(-w / 2, w / 2, 0.0, d)):
                break
        else:
            return False
        b0 = 0.0
        sc.floor_rects.append(fr.rect(-w / 2, w / 2, 0.0, d))
    if labeled:
        inst = sc.instance(rng.choice(["box", "cardboard box"]))
        m = sc.material(pick(rng, [(0.6, brownish_paint), (0.2, plastic), (0.2, paint)]))
    else:
        inst = sc.instance(rng.choice([None, None, "bag"]))
        m = sc.material(pick(rng, [(0.4, fabric), (0.6, plastic)]))
    sc.box(fr, -w / 2, w / 2, b0, b0 + d, 0.0, h, inst, m)
    if labeled and rng.random() < 0.3:  # stacked
        inst2 = sc.instance("box")
        w2, d2 = w * rng.uniform(0.6, 0.9), d * rng.uniform(0.6, 0.9)
        sc.box(fr, -w2 / 2, w2 / 2, b0, b0 + d2, h, h + rng.uniform(0.15, 0.35), inst2, m)
    return True


def plant(sc):
    rng = sc.rng
    spot = place_against_wall(sc, 0.45, 0.45, 1.0, tries=8)
    if spot is None:
        return False
    fr, wall, s = spot
    claim(sc, fr, wall, s, -0.22, 0.22, 0.0, 0.45, 1.0)
    inst = sc.instance("plant")
    pot = sc.material(pick(rng, [(0.5, brownish_paint), (0.5, plastic)]))
    leaf = sc.material(Mat(FABRIC, hsv(rng.uniform(0.22, 0.38), rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.55)),
                            scale=2.0))
    ph = rng.uniform(0.2, 0.4)
    sc.cyl(fr, 0.0, 0.22, rng.uniform(0.1, 0.16), 0.0, ph, inst, pot)
    for _ in range(3):
        sc.cyl(fr, rng.uniform(-0.06, 0.06), 0.22 + rng.uniform(-0.06, 0.06), rng.uniform(0.1, 0.2),
               ph + rng.uniform(0.0, 0.3), ph + rng.uniform(0.35, 0.7), inst, leaf)
    return True


def person(sc):
    rng = sc.rng
    for _ in range(10):
        x = rng.uniform(sc.xl + 0.4, sc.xr - 0.4)
        z = rng.uniform(1.8, sc.D - 0.5)
        facing = DIRS[int(rng.integers(4))] if rng.random() < 0.5 else (0.0, -1.0)
        fr = free_frame(x, z, facing)
        rect = fr.rect(-0.3, 0.3, -0.2, 0.2)
        if sc.floor_free(rect):
            break
    else:
        return False
    sc.floor_rects.append(rect)
    inst = sc.instance("person")
    H = rng.uniform(1.55, 1.9)
    shirt = sc.material(fabric(rng))
    pants = sc.material(fabric(rng))
    skin = sc.material(Mat(PAINT, hsv(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.9))))
    hair = sc.material(Mat(FABRIC, hsv(rng.uniform(0.05, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.5))))
    leg = 0.47 * H
    sh = 0.82 * H
    sc.box(fr, -0.16, -0.01, -0.08, 0.08, 0.0, leg, inst, pants)
    sc.box(fr, 0.01, 0.16, -0.08, 0.08, 0.0, leg, inst, pants)
    sc.box(fr, -0.2, 0.2, -0.11, 0.11, leg, sh, inst, shirt)
    sc.box(fr, -0.28, -0.2, -0.06, 0.06, sh - 0.6 * (sh - leg) - 0.15, sh, inst, shirt)
    sc.box(fr, 0.2, 0.28, -0.06, 0.06, sh - 0.6 * (sh - leg) - 0.15, sh, inst, shirt)
    sc.cyl(fr, 0.0, 0.0, 0.05, sh, sh + 0.05, inst, skin)
    sc.box(fr, -0.09, 0.09, -0.1, 0.1, sh + 0.05, H - 0.02, inst, skin)
    sc.box(fr, -0.095, 0.095, 0.0, 0.105, H - 0.1, H, inst, hair)
    return True


def rug(sc):
    rng = sc.rng
    w, d = rng.uniform(1.2, 2.4), rng.uniform(1.0, 2.0)
    x = rng.uniform(sc.xl + w / 2 + 0.3, max(sc.xl + w / 2 + 0.31, sc.xr - w / 2 - 0.3))
    z = rng.uniform(1.5 + d / 2, max(1.51 + d / 2, sc.D - d / 2 - 0.3))
    if x + w / 2 > sc.xr - 0.05 or z + d / 2 > sc.D - 0.05:
        return False
    inst = sc.instance("rug")
    m = sc.material(fabric(rng))
    fr = Frame(x, z, (1.0, 0.0), (0.0, -1.0))
    sc.box(fr, -w / 2, w / 2, -d / 2, d / 2, 0.0, 0.012, inst, m)
    return True

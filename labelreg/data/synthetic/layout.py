"""Room layout: the room box and its surfaces, and which objects each kind of room gets."""
from __future__ import annotations

from labelreg.data.synthetic.furniture import (bed, bookshelf, cabinet, floor_lamp_against_wall, sofa,
                                               table_with_chairs, tv_on_stand)
from labelreg.data.synthetic.materials import fabric, paint, pick, wood
from labelreg.data.synthetic.props import floor_box, person, plant, rug, wall_item
from labelreg.data.synthetic.scene import Scene

def build_scene(rng, aspect) -> tuple[Scene, dict]:
    room_w = rng.uniform(3.0, 5.0)
    room_d = rng.uniform(3.0, 6.0)
    room_h = rng.uniform(2.4, 3.0)
    sc = Scene(rng, room_w, room_d, room_h, z_front=-0.5)
    # room surfaces: one paint for the walls (sometimes an accent wall), floor, ceiling
    wall_mat = pick(rng, [(0.8, lambda r: paint(r, light=True)), (0.1, paint), (0.1, lambda r: fabric(r, True))])
    wm = sc.material(wall_mat)
    accent = sc.material(paint(rng)) if rng.random() < 0.2 else wm
    floor_mat = pick(rng, [(0.55, lambda r: wood(r, plank=r.uniform(0.1, 0.25))),
                            (0.3, fabric), (0.15, paint)])
    fm = sc.material(floor_mat)
    cm = sc.material(paint(rng, light=True))
    room = {
        "floor": (sc.instance("floor"), fm),
        "ceiling": (sc.instance("ceiling"), cm),
        "left": (sc.instance("wall"), wm),
        "right": (sc.instance("wall"), wm),
        "back": (sc.instance("wall"), accent),
        "front": (sc.instance("wall"), wm),
    }
    kind = rng.choice(["bedroom", "living", "dining", "office"], p=[0.3, 0.3, 0.2, 0.2])
    # wall items first (doors need floor space, windows wall space)
    if rng.random() < 0.55:
        wall_item(sc, "door")
    for _ in range(int(rng.integers(0, 3))):
        wall_item(sc, "window")
    if kind == "bedroom":
        bed(sc)
        if rng.random() < 0.5:
            cabinet(sc, raw="dresser")
        if rng.random() < 0.3:
            cabinet(sc)
        if rng.random() < 0.3:
            tv_on_stand(sc)
        if rng.random() < 0.3:
            floor_box(sc)
    elif kind == "living":
        res = sofa(sc)
        walls = ("back", "left", "right")
        if res is not None and res[1] != "back":
            walls = ("right",) if res[1] == "left" else ("left",)  # TV opposite the sofa
        if rng.random() < 0.75:
            tv_on_stand(sc, walls=walls) or tv_on_stand(sc)
        if rng.random() < 0.5:
            bookshelf(sc)
        if rng.random() < 0.5:
            plant(sc)
        if rng.random() < 0.3:
            table_with_chairs(sc)
    elif kind == "dining":
        table_with_chairs(sc)
        if rng.random() < 0.6:
            cabinet(sc)
        if rng.random() < 0.3:
            bookshelf(sc)
        if rng.random() < 0.4:
            plant(sc)
        if rng.random() < 0.3:
            floor_lamp_against_wall(sc)
    else:  # office / study
        for _ in range(int(rng.integers(1, 3))):
            bookshelf(sc)
        table_with_chairs(sc)
        if rng.random() < 0.5:
            cabinet(sc, tall=True)
        if rng.random() < 0.4:
            floor_lamp_against_wall(sc)
        if rng.random() < 0.3:
            tv_on_stand(sc)
    for _ in range(int(rng.integers(0, 4))):
        wall_item(sc, "picture")
    if rng.random() < 0.35:
        rug(sc)
    for _ in range(int(rng.integers(0, 3))):
        floor_box(sc, labeled=True)
    for _ in range(int(rng.integers(1, 5))):
        floor_box(sc, labeled=False)
    if rng.random() < 0.3:
        plant(sc)
    if rng.random() < 0.25:
        person(sc)
    return sc, room

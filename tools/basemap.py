#!/usr/bin/env python3
"""Converts Natural Earth outlines (TopoJSON from the npm package `world-atlas`) into
assets/basemap.bin, the compact file the console's offline basemap is rasterised from.

Run once at development time, not at build time:

    cd /tmp && npm pack world-atlas && tar xzf world-atlas-*.tgz
    python3 tools/basemap.py /tmp/package/countries-50m.json assets/basemap.bin

The file holds two layers of polylines in WGS 84, quantised to 16 bits per coordinate
(lon = q * 180 / 32767, lat = q * 90 / 32767, about 0.005 degrees, finer than the 1:50m data):

    magic   b"CVYMAP01"
    u32     number of land rings          (closed; filled with the even-odd rule)
    u32     number of border lines        (open; arcs shared by two countries)
    per ring or line: u32 point count, then count * (i16 lon, i16 lat), little-endian

Rings and lines that cross the antimeridian are made continuous and clipped on each side (see
unwrap()). Land rings come from the `land` object (polygons with holes); borders are the arcs of the
`countries` object that two different countries share, so coastlines are not drawn twice.
"""
import json
import struct
import sys


def decode_arcs(topo):
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        arcs.append(pts)
    return arcs


def arc_points(arcs, index):
    return arcs[index] if index >= 0 else list(reversed(arcs[~index]))


def ring(arcs, indices):
    pts = []
    for i in indices:
        a = arc_points(arcs, i)
        # Consecutive arcs share their joining point.
        pts.extend(a if not pts else a[1:])
    return pts


def polygons(geometry):
    if geometry["type"] == "Polygon":
        return [geometry["arcs"]]
    if geometry["type"] == "MultiPolygon":
        return geometry["arcs"]
    return []


def unwrap(points):
    """Rings that cross the antimeridian jump from +180 to -180 in one edge, which would paint a
    band across the whole world. Make their longitudes continuous instead and return a copy on
    each side of the world that the ring overhangs; quantise() clamps each copy to +-180, which
    clips it to the world. Rings that reach a pole (Antarctica) close along it and are kept."""
    if any(abs(lat) >= 89 for _, lat in points):
        return [points]
    out = [points[0]]
    for lon, lat in points[1:]:
        prev = out[-1][0]
        while lon - prev > 180:
            lon -= 360
        while lon - prev < -180:
            lon += 360
        out.append((lon, lat))
    lo = min(p[0] for p in out)
    hi = max(p[0] for p in out)
    copies = [out]
    if hi > 180:
        copies.append([(lon - 360, lat) for lon, lat in out])
    if lo < -180:
        copies.append([(lon + 360, lat) for lon, lat in out])
    return copies


def quantise(points):
    out = []
    for lon, lat in points:
        qx = max(-32767, min(32767, round(lon * 32767 / 180)))
        qy = max(-32767, min(32767, round(lat * 32767 / 90)))
        if not out or out[-1] != (qx, qy):
            out.append((qx, qy))
    return out


def main(src, dst):
    topo = json.load(open(src))
    arcs = decode_arcs(topo)
    rings = []
    for g in topo["objects"]["land"]["geometries"]:
        for poly in polygons(g):
            for r in poly:
                for piece in unwrap(ring(arcs, r)):
                    q = quantise(piece)
                    if len(q) >= 3:
                        rings.append(q)
    owners = {}
    for n, g in enumerate(topo["objects"]["countries"]["geometries"]):
        for poly in polygons(g):
            for r in poly:
                for i in r:
                    owners.setdefault(i if i >= 0 else ~i, set()).add(n)
    borders = []
    for i in sorted(owners):
        if len(owners[i]) >= 2:
            for piece in unwrap(arcs[i]):
                q = quantise(piece)
                if len(q) >= 2:
                    borders.append(q)
    with open(dst, "wb") as f:
        f.write(b"CVYMAP01")
        f.write(struct.pack("<II", len(rings), len(borders)))
        for line in rings + borders:
            f.write(struct.pack("<I", len(line)))
            f.write(b"".join(struct.pack("<hh", x, y) for x, y in line))
    points = sum(map(len, rings)) + sum(map(len, borders))
    print(f"{dst}: {len(rings)} land rings, {len(borders)} border lines, {points} points")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

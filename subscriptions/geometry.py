"""Plane geometry for matching areas: polygons from CAP rings, and circles tested against
shapes on a local projection (x = longitude, y = latitude; distances in kilometres on the
mean Earth sphere). Pure: no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from core.alert import Circle

KM_PER_DEGREE = 6371.0088 * math.pi / 180.0
"""Kilometres per degree of latitude on the mean Earth sphere (IUGG)."""


_BOX_PAD_DEGREES = 1e-7  # so an index box is never tighter than the predicate, despite rounding


_ORIGIN = shapely.Point(0.0, 0.0)


def polygon_of(ring: Iterable[tuple[float, float]], prepare: bool = True) -> BaseGeometry | None:
    """A shapely geometry (x = longitude, y = latitude) for a (lat, lon) ring, repaired with
    make_valid if it self-intersects; None if it has fewer than three distinct points.
    `prepare` for shapes tested many times (rules, jurisdictions), not for one alert's."""
    points = [(float(lon), float(lat)) for lat, lon in ring]
    if len(set(points)) < 3:
        return None
    shape: BaseGeometry = shapely.Polygon(points)
    if not shape.is_valid:
        shape = shapely.make_valid(shape)
    if prepare:
        shapely.prepare(shape)
    return shape


def circle_box(circle: Circle) -> tuple[float, float, float, float]:
    """(min lon, min lat, max lon, max lat) containing every point the circle can reach under
    `circle_hits`, slightly padded."""
    dlat = circle.radius_km / KM_PER_DEGREE
    cos_lat = math.cos(math.radians(circle.latitude))
    dlon = 360.0 if cos_lat < 1e-9 else circle.radius_km / (KM_PER_DEGREE * cos_lat)
    pad = _BOX_PAD_DEGREES
    return (
        circle.longitude - dlon - pad,
        circle.latitude - dlat - pad,
        circle.longitude + dlon + pad,
        circle.latitude + dlat + pad,
    )


def _boxes_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def circle_hits(circle: Circle, shape: BaseGeometry) -> bool:
    """Whether the circle (radius 0: a point) intersects the shape, boundary included."""
    if not _boxes_overlap(circle_box(circle), tuple(shape.bounds)):
        return False
    centre = np.array((circle.longitude, circle.latitude))
    scale = np.array((KM_PER_DEGREE * math.cos(math.radians(circle.latitude)), KM_PER_DEGREE))

    def project(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        projected: NDArray[np.float64] = (xy - centre) * scale
        return projected

    return bool(shapely.transform(shape, project).distance(_ORIGIN) <= circle.radius_km)

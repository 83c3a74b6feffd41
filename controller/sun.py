"""The sun's position at the site: the one function both shells use for the daylight rule.

Rule: pure (no clock; time is an argument). The live runtime calls it once per cycle when it
builds the observation; the simulator may precompute a whole run's ephemeris with the same
function, so both shells see the same elevation at the same instant.
"""

from __future__ import annotations

from datetime import datetime

from astral import Observer
from astral.sun import elevation

from laterne.models.layout import SiteLayout

__all__ = ["sun_elevation_deg"]


def sun_elevation_deg(layout: SiteLayout, now: datetime) -> float:
    """Apparent solar elevation at the site [°], refraction included."""
    return float(elevation(Observer(layout.latitude_deg, layout.longitude_deg), now))

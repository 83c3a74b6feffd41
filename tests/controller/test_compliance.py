"""Compliance: the band the measured traffic required against the band whose class the level
delivered, on the demo's bands (bahnhofstr M5/M4/M3/M2 from 0/150/400/800 veh/h, planned at
30/50/75/100 %; with design class M1 the classes need 25/37.5/50/75 %; lindenweg P5/P4/P3 need
20/33.4/50 % of its P1 design)."""

from __future__ import annotations

import numpy as np
import pytest

from laterne.controller.compliance import compliance
from laterne.models.layout import SiteLayout

NAN = float("nan")


@pytest.mark.parametrize(
    ("flow", "dim", "required", "delivered", "violation"),
    [
        # quiet night, lowest band at its level: compliant
        ([50, 20, 10], [30, 30, 20], [0, 0, 0], [0, 0, 0], [False, False, False]),
        # busy main road still at the quiet level: under-lit
        ([500, 20, 10], [30, 30, 20], [2, 0, 0], [0, 0, 0], [True, False, False]),
        # more light than needed is never a violation
        ([0, 0, 0], [100, 100, 100], [0, 0, 0], [3, 2, 2], [False, False, False]),
        # one grid step short of a class is under-lit; the register's float round trip is not
        ([200, 120, 70], [37.4, 37.49, 33.4], [1, 1, 1], [0, 1, 1], [True, False, False]),
        # below the plan's level but at the class's: compliant (a curfew may do this)
        ([500, 120, 70], [50, 37.5, 33.4], [2, 1, 1], [2, 1, 1], [False, False, False]),
        # unknown flow: nothing can be required
        ([NAN, NAN, 300], [0, 0, 70], [-1, -1, 2], [-1, -1, 2], [False, False, False]),
    ],
)
def test_required_against_delivered(
    demo_layout: SiteLayout,
    flow: list[float],
    dim: list[float],
    required: list[int],
    delivered: list[int],
    violation: list[bool],
) -> None:
    c = compliance(demo_layout, np.array(flow), np.array(dim), np.array(True))
    assert c.required_band.tolist() == required
    assert c.delivered_band.tolist() == delivered
    assert c.violation.tolist() == violation


def test_daylight_requires_nothing(demo_layout: SiteLayout) -> None:
    c = compliance(demo_layout, np.array([900.0, 400, 300]), np.zeros(3), np.array(False))
    assert c.required_band.tolist() == [-1, -1, -1]
    assert not c.violation.any()


def test_class_names(demo_layout: SiteLayout) -> None:
    c = compliance(
        demo_layout, np.array([900.0, NAN, 70]), np.array([100.0, 0, 20]), np.array(True)
    )
    assert c.class_names(demo_layout, c.required_band) == ["M2", "", "P4"]
    assert c.class_names(demo_layout, c.delivered_band) == ["M2", "", "P5"]


def test_a_time_axis_broadcasts(demo_layout: SiteLayout) -> None:
    rng = np.random.default_rng(3)
    flow = rng.uniform(0, 1000, (96, 3))
    dim = rng.uniform(0, 100, (96, 3))
    dark = rng.random((96, 1)) < 0.5
    together = compliance(demo_layout, flow, dim, dark)
    for t in range(96):
        one = compliance(demo_layout, flow[t], dim[t], dark[t])
        assert together.violation[t].tolist() == one.violation.tolist()
        assert together.required_band[t].tolist() == one.required_band.tolist()
        assert together.delivered_band[t].tolist() == one.delivered_band.tolist()

"""The compliance record end to end: the emulated demo site on loopback (real Modbus TCP and
OPC-UA), the runtime, and /api/compliance and /api/segments/{id}. Quarter-hour intervals fill as
the cycles run; an override below the class the traffic needs is recorded as a violation.

A manual clock, 5-minute cycles, a November evening (dark throughout); no wall-clock sleeping.
"""

from __future__ import annotations

from datetime import timedelta

from laterne.models.values import Override

from .test_fault_detection import Rig, rig  # noqa: F401  (the fixture)


async def test_the_record_fills_per_interval_and_counts_an_under_lit_one(rig: Rig) -> None:  # noqa: F811
    await rig.cycles(13)  # 19:05 … 20:05 local: four intervals closed
    body = (await rig.api.get("/api/compliance")).json()
    assert body["interval_s"] == 900
    # the first interval (19:00-19:15) has counts from 19:05 to 19:10 only: under half of it,
    # no known flow, nothing required; the three after it were lit
    lit = {s: v["lit_intervals"] for s, v in body["segments"].items()}
    assert lit == {"bahnhofstr": 3, "elberfelder": 3, "lindenweg": 3}
    assert all(v["violation_intervals"] == 0 for v in body["segments"].values())
    intervals = body["intervals"]
    assert len(intervals) == 4 * 3
    main_road = [i for i in intervals if i["segment_id"] == "bahnhofstr"]
    newest, oldest = main_road[0], main_road[-1]
    assert newest["end"] == max(i["end"] for i in intervals)
    assert newest["required_class"].startswith("M") and newest["flow_veh_h"] > 0
    assert not newest["violation"]
    assert oldest["flow_veh_h"] is None and oldest["required_class"] == "" and not oldest["lit"]

    # a person holds the main road at 20 % (below M5's 25 % with design class M1) for 20 min
    now = rig.clock.now()
    rig.runtime.set_overrides(
        [Override("segment", "bahnhofstr", 20.0, now, now + timedelta(minutes=20), "test")]
    )
    await rig.cycles(6)
    seg = (await rig.api.get("/api/segments/bahnhofstr")).json()
    assert seg["lit_intervals"] == 5  # two more intervals closed (20:00, 20:15), both held low
    assert seg["violation_intervals"] == 2
    body = (await rig.api.get("/api/compliance", params={"segment": "bahnhofstr"})).json()
    assert set(body["segments"]) == {"bahnhofstr"}
    bad = [i for i in body["intervals"] if i["violation"]]
    assert bad and all(i["min_dim_pct"] == 20.0 for i in bad)
    assert all(i["delivered_class"] not in ("M5", "M4", "M3", "M2") for i in bad)
    others = (await rig.api.get("/api/compliance", params={"segment": "lindenweg"})).json()
    assert others["segments"]["lindenweg"]["violation_intervals"] == 0


async def test_bad_compliance_queries_get_a_4xx_that_says_why(rig: Rig) -> None:  # noqa: F811
    r = await rig.api.get("/api/compliance", params={"segment": "nowhere"})
    assert r.status_code == 404 and "bahnhofstr" in r.text
    r = await rig.api.get("/api/compliance", params={"since": "2026-11-25T19:00:00"})
    assert r.status_code == 422  # no offset: ambiguous
    r = await rig.api.get("/api/compliance", params={"limit": 0})
    assert r.status_code == 422

"""The poller: each device on its own interval at its own phase, on the injected clock; the
health state machine and per-device isolation with in-memory clients."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from laterne.controller.poller import DeviceTable, Poller, PollSchedule, phase_fraction
from laterne.controller.writer import Readback
from laterne.drivers.field.errors import DeviceOffline
from laterne.models.site import SiteConfig
from laterne.models.values import DeviceState, PointReading, Quality

T0 = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)


def polled_cycles(
    schedule: PollSchedule, cycle_s: float, n: int, start: datetime = T0
) -> dict[str, list[int]]:
    """Run ``n`` cycles ``cycle_s`` apart: the cycle indices at which each device was polled."""
    out: dict[str, list[int]] = {}
    for k in range(n):
        now = start + timedelta(seconds=k * cycle_s)
        for d in schedule.due(now):
            schedule.polled(d, now)
            out.setdefault(d, []).append(k)
    return out


def test_the_first_cycle_polls_every_device() -> None:
    schedule = PollSchedule({"a": 10.0, "b": 30.0, "c": 3600.0, "d": 5.0}, cycle_s=10.0)
    assert schedule.due(T0) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("phase", [0.0, 0.25, 0.5, 0.999])
def test_an_interval_equal_to_the_cycle_is_polled_every_cycle(phase: float) -> None:
    schedule = PollSchedule({"a": 10.0}, cycle_s=10.0, phases={"a": phase})
    assert polled_cycles(schedule, 10.0, 20)["a"] == list(range(20))


@pytest.mark.parametrize(("phase", "first"), [(0.0, 3), (0.1, 1), (0.5, 2), (0.9, 3)])
def test_thirty_seconds_on_a_ten_second_cycle_is_every_third_cycle_at_its_phase(
    phase: float, first: int
) -> None:
    """Its slots are start + (phase + k) × 30 s; it is polled on the first cycle at or after
    each slot: at start (every device), then every third cycle from its phase on."""
    schedule = PollSchedule({"a": 30.0}, cycle_s=10.0, phases={"a": phase})
    assert polled_cycles(schedule, 10.0, 13)["a"] == [0, *range(first, 13, 3)]


def test_equal_intervals_with_other_ids_are_not_all_on_the_same_tick() -> None:
    """The phase comes from the id (deterministically): the two demo counters, both 30 s on a
    10 s cycle, are polled on different cycles — on every start, in every process."""
    ids = ["counter-north", "counter-east"]
    schedule = PollSchedule(dict.fromkeys(ids, 30.0), cycle_s=10.0)
    seen = polled_cycles(schedule, 10.0, 10)
    assert seen == {"counter-north": [0, 3, 6, 9], "counter-east": [0, 2, 5, 8]}
    again = polled_cycles(PollSchedule(dict.fromkeys(ids, 30.0), cycle_s=10.0), 10.0, 10)
    assert again == seen
    # a hash of the id, not Python's per-process salted hash()
    assert phase_fraction("counter-east") == pytest.approx(0.5839991261230116, abs=1e-15)


def test_many_devices_with_one_interval_spread_over_the_cycles() -> None:
    ids = [f"ctr-{i:03d}" for i in range(60)]
    schedule = PollSchedule(dict.fromkeys(ids, 30.0), cycle_s=10.0)
    seen = polled_cycles(schedule, 10.0, 4)
    per_cycle = [sum(k in ticks for ticks in seen.values()) for k in range(1, 4)]
    assert sum(per_cycle) == 60  # each polled once in the three cycles after the first
    assert min(per_cycle) >= 10  # no cycle gets (nearly) all of them
    assert all(0.0 <= phase_fraction(d) < 1.0 for d in ids)


def test_an_interval_between_cycles_is_kept_on_average_not_quantised_up() -> None:
    """25 s on a 10 s cycle: 4 polls per 100 s (gaps of 20 and 30 s), not every 30 s."""
    schedule = PollSchedule({"a": 25.0}, cycle_s=10.0, phases={"a": 0.3})
    ticks = polled_cycles(schedule, 10.0, 101)["a"]
    gaps = {b - a for a, b in pairwise(ticks[1:])}
    assert gaps == {2, 3}
    assert len(ticks) == 1 + 40  # the first poll, then one per 25 s slot in 1000 s


def test_faster_than_the_cycle_is_every_cycle_and_said_once(
    demo_site: SiteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    devices = [
        d.model_copy(update={"poll_interval_s": 2.0}) if d.id.startswith("counter") else d
        for d in demo_site.devices
    ]
    site = demo_site.model_copy(update={"devices": devices})
    caplog.set_level(logging.INFO, logger="laterne.runtime")
    poller = Poller(site, {}, DeviceTable(site, T0, lambda _s: None), _NoReadback())
    lines = [r.getMessage() for r in caplog.records if "below the" in r.getMessage()]
    assert lines == [
        "2 device(s) have a poll_interval_s below the 10 s cycle and are polled every cycle: "
        "counter-north, counter-east"
    ]
    seen = polled_cycles(poller.schedule, site.policy.cycle_s, 5)
    assert seen["counter-north"] == seen["counter-east"] == [0, 1, 2, 3, 4]


def test_slots_missed_by_a_long_cycle_are_skipped_not_caught_up() -> None:
    schedule = PollSchedule({"a": 30.0}, cycle_s=10.0, phases={"a": 0.5})  # slots at 15 + 30 k
    schedule.polled("a", T0)
    late = T0 + timedelta(seconds=200)  # slots 15 … 195 passed during one long cycle
    assert schedule.due(late) == ["a"]
    schedule.polled("a", late)
    assert schedule.next_due("a") == T0 + timedelta(seconds=225)
    assert schedule.due(late + timedelta(seconds=10)) == []
    assert schedule.due(T0 + timedelta(seconds=225)) == ["a"]


@pytest.mark.parametrize(("interval_s", "next_cycle"), [(10.0, 0), (30.0, 1)])
def test_a_clock_that_steps_back_polls_at_once(interval_s: float, next_cycle: int) -> None:
    """Not only once the clock is back where it was; the grid starts again from there."""
    schedule = PollSchedule({"a": interval_s}, cycle_s=10.0, phases={"a": 0.5})
    polled_cycles(schedule, 10.0, 6)
    back = T0 - timedelta(hours=1)
    assert schedule.due(back) == ["a"]
    schedule.polled("a", back)
    after = polled_cycles(schedule, 10.0, 4, start=back + timedelta(seconds=10))["a"]
    assert after[0] == next_cycle  # 30 s: at its phase, back + 15 s -> the cycle at back + 20 s


def test_phases_outside_the_interval_are_refused() -> None:
    with pytest.raises(ValueError, match="phase of a"):
        PollSchedule({"a": 30.0}, cycle_s=10.0, phases={"a": 1.0})


# -- the poller with in-memory clients ------------------------------------------------------------


class _NoReadback:
    def check_readback(self, device_id: str, readings: object, now: datetime) -> Readback:
        return Readback()

    def retrying(self, key: tuple[str, str]) -> bool:
        return False


@dataclass
class _Client:
    device_id: str
    points: list[str]
    fail: BaseException | None = None
    reads: list[datetime] = field(default_factory=list)

    async def read(self, now: datetime) -> dict[str, PointReading]:
        self.reads.append(now)
        if self.fail is not None:
            raise self.fail
        return {p: PointReading(self.device_id, p, 1.0, Quality.GOOD, now) for p in self.points}

    async def write(self, point: str, value: float) -> float:
        return value

    async def close(self) -> None:
        return None


def _rig(site: SiteConfig) -> tuple[Poller, DeviceTable, dict[str, _Client], list[DeviceState]]:
    recorded: list[DeviceState] = []
    clients = {d.id: _Client(d.id, list(site.profile_of(d.id).points)) for d in site.devices}
    table = DeviceTable(site, T0, recorded.append)
    return Poller(site, clients, table, _NoReadback()), table, clients, recorded


async def test_one_failing_client_leaves_the_others_polled(demo_site: SiteConfig) -> None:
    poller, table, clients, recorded = _rig(demo_site)
    assert [s.quality for s in recorded] == [Quality.OFFLINE] * len(demo_site.devices)
    clients["school"].fail = KeyError("nodes")
    clients["counter-east"].fail = DeviceOffline("gone")
    polled = await poller.poll_due(T0)
    assert set(polled.devices) == {d.id for d in demo_site.devices}
    assert table.states["school"].quality is Quality.FAULTY
    assert "unexpected KeyError" in table.states["school"].last_error
    assert table.states["counter-east"].quality is Quality.OFFLINE
    assert table.states["counter-north"].quality is Quality.GOOD
    failed = [r for r in polled.readings if r.device_id == "school"]
    assert failed and all(math.isnan(r.value) and r.quality is Quality.FAULTY for r in failed)
    # recorded once per change: counter-east stayed offline, so it is not recorded again
    assert [s.device_id for s in recorded[len(demo_site.devices) :]].count("counter-east") == 0


async def test_a_device_goes_offline_once_and_listeners_hear_it(demo_site: SiteConfig) -> None:
    poller, table, clients, _recorded = _rig(demo_site)
    heard: list[str] = []
    table.on_offline(heard.append)
    await poller.poll_due(T0)
    clients["counter-north"].fail = DeviceOffline("gone")
    for k in range(1, 4):
        await poller.poll_due(T0 + timedelta(seconds=10 * k))
    assert heard == ["counter-north"]


async def test_the_poller_reads_each_device_on_its_own_schedule(demo_site: SiteConfig) -> None:
    """Through the real poller: 30 s counters on the 10 s cycle, each at its own phase."""
    devices = [
        d.model_copy(update={"poll_interval_s": 30.0}) if d.id.startswith("counter") else d
        for d in demo_site.devices
    ]
    site = demo_site.model_copy(update={"devices": devices})
    poller, _table, clients, _recorded = _rig(site)
    for k in range(10):
        await poller.poll_due(T0 + timedelta(seconds=10 * k))
    cycles = {d: [int((t - T0).total_seconds() // 10) for t in c.reads] for d, c in clients.items()}
    assert cycles["counter-north"] == [0, 3, 6, 9]
    assert cycles["counter-east"] == [0, 2, 5, 8]
    assert cycles["seg-bahnhofstr"] == list(range(10))  # 10 s: every cycle

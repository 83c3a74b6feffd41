"""Reading OPC-UA by data-change subscription, against real asyncua servers on 127.0.0.1: a
change arrives without a Read, a silent subscription is refreshed before it is trusted, the
feed keeps the newest value and hears keep-alives, and a server without subscriptions (or
``subscribe: false``) is polled."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from laterne.drivers.field.opcua import LinkState, OpcUaDevice
from laterne.drivers.field.opcua_feed import Feed, keepalive_count

from ..conftest import FakeClock
from ..opcua_plant import (
    NOW,
    POINTS,
    SCHOOL,
    VT,
    StartServer,
    make_device,
    mode,
    start_server,
    state,
    until,
    values,
)

__all__ = ["make_device", "start_server"]  # fixtures, used by name below


# -------------------------------------------------------------------------- subscriptions


async def test_subscription_delivers_a_change_without_any_read(
    start_server: StartServer, make_device: Callable[..., OpcUaDevice]
) -> None:
    plant = await start_server()
    dev = make_device(plant.url)
    assert values(await dev.read(NOW)) == SCHOOL  # connect: subscribe, then one full Read
    assert dev.mode == "subscription" and dev.subscriptions_created == 1
    assert len(plant.reads) == len(POINTS)
    plant.reads.clear()

    await plant.set("temp", 23.75)

    async def arrived() -> bool:
        return (await dev.read(NOW))["temp_c"].value == 23.75

    await until(arrived, "the change reaches read()")
    assert plant.reads == []  # read() answered from the subscription's table every time
    assert dev.notifications >= 1
    assert plant.subscriptions == 1 and plant.items_created == len(POINTS)
    assert state(dev) is LinkState.CONNECTED


async def test_silent_subscription_is_refreshed_before_it_is_trusted(
    start_server: StartServer, make_device: Callable[..., OpcUaDevice], clock: FakeClock
) -> None:
    plant = await start_server()
    dev = make_device(plant.url)
    await dev.read(NOW)
    first = dev.subscription_id
    plant.reads.clear()

    # nothing heard for longer than stale_after_s (30 s by default): the table is not trusted
    clock.advance(31.0)
    readings = await dev.read(NOW)
    assert values(readings) == SCHOOL
    assert len(plant.reads) == len(POINTS)  # confirmed by one full Read before answering
    assert dev.subscriptions_created == 2 and dev.subscription_id != first
    assert plant.subscriptions == 1  # the silent one was deleted, not leaked


def publish(*notifications: Any) -> ua.PublishResult:
    result = ua.PublishResult()
    result.NotificationMessage.NotificationData = list(notifications)
    return result


def stamped(value: float, ts: datetime) -> ua.DataValue:
    dv = ua.DataValue(ua.Variant(value, VT.Double))
    dv.SourceTimestamp = ts  # type: ignore[assignment]  # asyncua annotates its DateTime subclass
    return dv


def change(handle: int, value: float, ts: datetime) -> ua.DataChangeNotification:
    dv = stamped(value, ts)
    return ua.DataChangeNotification(MonitoredItems=[ua.MonitoredItemNotification(handle, dv)])


def test_feed_keeps_the_newest_value_and_hears_keepalives(clock: FakeClock) -> None:
    feed = Feed({1: "temp_c"}, clock)
    t1, t2 = NOW, NOW.replace(minute=1)
    feed.on_publish(publish(change(1, 20.0, t2)))
    feed.update("temp_c", stamped(19.0, t1))
    latest = feed.samples["temp_c"].value.Value
    assert latest is not None and latest.Value == 20.0  # an older Read loses
    assert feed.notifications == 1
    feed.on_publish(publish(change(7, 1.0, t2)))  # not our handle: ignored
    assert feed.notifications == 1

    clock.advance(10.0)
    assert feed.silent_s() == 10.0
    feed.on_publish(publish())  # a keep-alive: no data, but alive
    assert feed.silent_s() == 0.0 and not feed.lost

    clock.advance(1.0)
    shutdown = ua.StatusChangeNotification(Status=ua.StatusCode(ua.UInt32(StatusCodes.BadShutdown)))
    feed.on_publish(publish(shutdown))  # what asyncua reports when the connection drops
    assert feed.lost and "BadShutdown" in feed.lost_reason and feed.silent_s() == 1.0


def test_keepalive_is_asked_for_twice_per_stale_period() -> None:
    assert keepalive_count(1000.0, 30.0) == 15
    assert keepalive_count(50.0, 30.0) == 300
    assert keepalive_count(20_000.0, 30.0) == 1  # never 0


async def test_server_without_subscriptions_falls_back_to_polling(
    start_server: StartServer, make_device: Callable[..., OpcUaDevice]
) -> None:
    plant = await start_server()
    plant.server.iserver.max_subscriptions = 0  # CreateSubscription: BadTooManySubscriptions
    dev = make_device(plant.url)
    assert dev.mode == "subscription"  # what the endpoint asks for, before connecting
    assert values(await dev.read(NOW)) == SCHOOL
    assert mode(dev) == "polling" and dev.subscription_id is None
    plant.reads.clear()
    await plant.set("temp", 22.0)
    assert (await dev.read(NOW))["temp_c"].value == 22.0  # polled: no wait needed
    assert len(plant.reads) == len(POINTS)
    assert await dev.write("gym_setpoint_c", 18.5) == 18.5


async def test_subscribe_false_polls(
    start_server: StartServer, make_device: Callable[..., OpcUaDevice]
) -> None:
    plant = await start_server()
    dev = make_device(plant.url, subscribe=False)
    for _ in range(3):
        assert values(await dev.read(NOW)) == SCHOOL
    assert dev.mode == "polling"
    assert len(plant.reads) == 3 * len(POINTS) and plant.subscriptions == 0

"""The OPC-UA driver in depth, against real asyncua servers on 127.0.0.1: browse paths,
subscriptions and their fallback to polling, secure channels, credentials from the environment,
and a server killed and restarted on the same port.

Every server here is built by :func:`start_server`, which can rebuild "the same" plant on a port
(optionally with other NodeIds behind the same browse paths) and counts, through asyncua's
server callbacks, the external Read requests that touch our nodes and the monitored items
created. Timing never decides an assertion: waits are bounded loops on a condition.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.common.node import Node
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from laterne.drivers.backoff import Backoff
from laterne.drivers.errors import (
    BadStatus,
    DeviceOffline,
    DeviceRefused,
    MissingCredential,
    SetupError,
    UnresolvedBrowsePath,
)
from laterne.drivers.opcua import LinkState, Mode, OpcUaDevice
from laterne.drivers.opcua_feed import Feed, keepalive_count
from laterne.drivers.opcua_paths import format_browse_path, parse_browse_path
from laterne.models.site import Device, DeviceProfile, OpcUaPoint, OpcUaProfile
from laterne.models.values import Quality

from .conftest import FakeClock, free_port, profile

NOW = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)
TIMEOUT_S = 0.5
WAIT_S = 5.0  # upper bound of every wait for a notification or a state change
VT = ua.VariantType

TEMP_PATH = "2:School/2:Classrooms/2:Temperature"
SETPOINT_PATH = "2:School/2:Classrooms/2:Setpoint"
POINTS: dict[str, dict[str, Any]] = {
    "temp_c": {"browse_path": TEMP_PATH, "min": -40, "max": 60},
    "setpoint_c": {"browse_path": SETPOINT_PATH, "writable": True, "min": 10, "max": 26},
    "gym_setpoint_c": {"node": "ns=2;s=gym.setpoint", "writable": True, "min": 10, "max": 26},
    "valve_pct": {"browse_path": "2:School/2:Valve", "scale": 0.1, "min": 0, "max": 100},
}


# ------------------------------------------------------------------------------ servers


@dataclass
class Plant:
    """One running asyncua server holding the school, and what it has been asked."""

    server: Server
    port: int
    nodes: dict[str, Node]
    reads: list[ua.NodeId] = field(default_factory=list)  # external Reads of our nodes
    items_created: int = 0  # monitored items created

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/laterne/"

    @property
    def subscriptions(self) -> int:
        """Subscriptions alive on the server, over all sessions."""
        return len(self.server.iserver.subscription_service.subscriptions)

    async def set(self, key: str, value: Any, vt: ua.VariantType = VT.Double) -> None:
        await self.nodes[key].write_value(ua.Variant(value, vt))

    async def stop(self) -> None:
        await self.server.stop()


@dataclass
class Security:
    """Server certificate and key, and the policies offered (None: only no security)."""

    cert: Path
    key: Path
    policies: list[ua.SecurityPolicyType]


class OneUser(UserManager):
    """A user manager that knows one user name and password."""

    def __init__(self, name: str, password: str) -> None:
        self.name = name
        self.password = password

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None,
        certificate: Any = None,
    ) -> User | None:  # fmt: skip
        if username == self.name and password == self.password:
            return User(role=UserRole.User, name=username)
        return None


StartServer = Callable[..., Awaitable[Plant]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """``await start_server(port=None, *, numeric_ids=False, security=None, users=None)``."""
    plants: list[Plant] = []

    async def start(
        port: int | None = None,
        *,
        numeric_ids: bool = False,
        security: Security | None = None,
        users: OneUser | None = None,
    ) -> Plant:
        port = port if port is not None else free_port()
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/laterne/")
        if security is not None:
            await server.load_certificate(str(security.cert))
            await server.load_private_key(str(security.key))
            server.set_security_policy(security.policies)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        idx = await server.register_namespace("urn:laterne:test")

        # the same browse paths, behind string ids or (after a "firmware update") numeric ones
        def nid(key: str, number: int) -> ua.NodeId:
            return ua.NodeId.from_string(
                f"ns={idx};i={number}" if numeric_ids else f"ns={idx};s={key}"
            )

        school = await server.nodes.objects.add_folder(nid("school", 1000), f"{idx}:School")
        rooms = await school.add_object(nid("school.classrooms", 1001), f"{idx}:Classrooms")
        nodes = {
            "temp": await rooms.add_variable(nid("temp", 1002), f"{idx}:Temperature", 21.5),
            "setpoint": await rooms.add_variable(
                nid("setpoint", 1003), f"{idx}:Setpoint", 19.0, varianttype=VT.Float
            ),
            "valve": await school.add_variable(
                nid("valve", 1004), f"{idx}:Valve", 250, varianttype=VT.UInt16
            ),
            "gym.setpoint": await school.add_variable(
                ua.NodeId.from_string(f"ns={idx};s=gym.setpoint"), f"{idx}:GymSetpoint", 17.0
            ),
        }
        for key in ("setpoint", "gym.setpoint"):
            await nodes[key].set_writable()
        plant = Plant(server, port, nodes)
        ours = {n.nodeid for n in nodes.values()}

        def count_reads(event: ServerItemCallback, _dispatcher: Any) -> None:
            if event.is_external:
                plant.reads += [r.NodeId for r in event.request_params.NodesToRead
                                if r.NodeId in ours]  # fmt: skip

        def count_items(event: ServerItemCallback, _dispatcher: Any) -> None:
            plant.items_created += len(event.request_params.ItemsToCreate)

        server.subscribe_server_callback(CallbackType.PreRead, count_reads)
        server.subscribe_server_callback(CallbackType.ItemSubscriptionCreated, count_items)
        await server.start()
        plants.append(plant)
        return plant

    yield start
    for plant in plants:
        try:
            await plant.stop()
        except Exception:  # already stopped by the test
            pass


def opcua_device(url: str, **endpoint: Any) -> Device:
    return Device.model_validate(
        {
            "id": "school",
            "profile": "p",
            "endpoint": {"url": url, "publishing_interval_ms": 50, **endpoint},
            "timeout_s": TIMEOUT_S,
        }
    )


@pytest.fixture
async def make_device(clock: FakeClock) -> AsyncIterator[Callable[..., OpcUaDevice]]:
    """``make_device(url, points=POINTS, **endpoint)``: closed again after the test."""
    devices: list[OpcUaDevice] = []

    def make(url: str, points: dict[str, dict[str, Any]] | None = None, **ep: Any) -> OpcUaDevice:
        prof: DeviceProfile = profile("opcua", points if points is not None else POINTS)
        dev = OpcUaDevice(
            opcua_device(url, **ep), prof, backoff=Backoff(jitter=0.0, monotonic=clock),
            monotonic=clock,
        )  # fmt: skip
        devices.append(dev)
        return dev

    yield make
    for dev in devices:
        await dev.close()


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait, at most WAIT_S, until ``condition()`` holds."""

    async def loop() -> None:
        while not await condition():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(loop(), WAIT_S)
    except TimeoutError:
        pytest.fail(f"not within {WAIT_S} s: {what}")


def state(dev: OpcUaDevice) -> LinkState:
    return dev.state  # read afresh (keeps mypy from narrowing the property across awaits)


def mode(dev: OpcUaDevice) -> Mode:
    return dev.mode  # read afresh, as state()


def values(readings: dict[str, Any]) -> dict[str, float]:
    return {n: r.value for n, r in readings.items() if r.quality is Quality.GOOD}


SCHOOL = {"temp_c": 21.5, "setpoint_c": 19.0, "gym_setpoint_c": 17.0, "valve_pct": 25.0}


# --------------------------------------------------------------------------- browse paths


def test_browse_path_format() -> None:
    path = parse_browse_path(TEMP_PATH)
    assert [(q.NamespaceIndex, q.Name) for q in path] == [
        (2, "School"), (2, "Classrooms"), (2, "Temperature"),
    ]  # fmt: skip
    assert format_browse_path(path) == TEMP_PATH
    for bad in ("", "School/2:Temp", "2:School//2:Temp", "/2:School", "70000:School", "2:"):
        with pytest.raises(ValueError, match="browse path"):
            parse_browse_path(bad)


@pytest.mark.parametrize(
    ("where", "text", "says"),
    [
        ("browse_path", "2:School/Temperature", "not '<namespace index>:<browse name>'"),
        ("node", "ns=2;x=Temperature", "identifier kind 'x'"),
        ("node", "nsu=;s=Temperature", "empty namespace URI"),
    ],
)
def test_malformed_address_fails_at_construction(where: str, text: str, says: str) -> None:
    # the site loader refuses these already; the driver parses again (with the same parser)
    # for profiles built in code, bypassing validation as model_construct does
    spec = OpcUaPoint.model_construct(**{where: text})
    prof = OpcUaProfile.model_construct(protocol="opcua", points={"t": spec})
    with pytest.raises(ValueError, match=re.escape(says)):
        OpcUaDevice(opcua_device("opc.tcp://127.0.0.1:4840/"), prof)


@pytest.mark.parametrize("subscribe", [True, False])
async def test_browse_path_points_read_and_write(
    start_server: StartServer, make_device: Callable[..., OpcUaDevice], subscribe: bool
) -> None:
    plant = await start_server()
    attic = {"browse_path": "2:School/2:Attic/2:Temp", "writable": True, "min": 0, "max": 40}
    points = {**POINTS, "attic_c": attic}
    dev = make_device(plant.url, points, subscribe=subscribe)
    readings = await dev.read(NOW)
    assert dev.mode == ("subscription" if subscribe else "polling")
    assert values(readings) == SCHOOL
    assert readings["attic_c"].quality is Quality.FAULTY
    assert "'2:School/2:Attic/2:Temp' does not resolve: BadNoMatch" in readings["attic_c"].error

    f32 = 21.25  # exactly representable as a Float
    assert await dev.write("setpoint_c", f32) == f32
    assert await plant.nodes["setpoint"].read_value() == f32
    dv = await plant.nodes["setpoint"].read_data_value()
    assert dv.Value is not None and dv.Value.VariantType is VT.Float  # the node's own type
    assert (await dev.read(NOW))["setpoint_c"].value == f32
    with pytest.raises(UnresolvedBrowsePath, match="Attic"):  # a typed error, not a crash
        await dev.write("attic_c", 1.0)


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


# ------------------------------------------------------------------------------- security


def write_certificate(
    tmp: Path, name: str, uri: str, usage: x509.ObjectIdentifier
) -> tuple[Path, Path]:
    """A self-signed application certificate (DER) and its key (PEM) for ``uri``."""
    key = cert_gen.generate_private_key()
    names = [x509.UniformResourceIdentifier(uri), x509.DNSName(socket.gethostname())]
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, names, [usage])
    cert_path, key_path = tmp / f"{name}.der", tmp / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pki")
    server_cert, server_key = write_certificate(
        tmp, "server", "urn:freeopcua:python:server", ExtendedKeyUsageOID.SERVER_AUTH
    )
    client_cert, client_key = write_certificate(
        tmp, "laterne", "urn:laterne:controller", ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return {"server_cert": server_cert, "server_key": server_key,
            "client_cert": client_cert, "client_key": client_key}  # fmt: skip


SECURE_ONLY = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
]


@pytest.mark.parametrize(
    ("mode", "pin_server"),
    [("sign", False), ("sign_and_encrypt", False), ("sign_and_encrypt", True)],
)
async def test_secure_endpoint_reads_and_writes(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    certificates: dict[str, Path],
    mode: str,
    pin_server: bool,
) -> None:
    security = Security(certificates["server_cert"], certificates["server_key"], SECURE_ONLY)
    plant = await start_server(security=security)
    pinned = {"server_certificate": str(certificates["server_cert"])} if pin_server else {}
    dev = make_device(
        plant.url,
        security=mode,
        certificate=str(certificates["client_cert"]),
        private_key=str(certificates["client_key"]),
        **pinned,
    )
    assert values(await dev.read(NOW)) == SCHOOL
    assert await dev.write("gym_setpoint_c", 20.5) == 20.5
    assert dev.mode == "subscription"
    await plant.set("temp", 24.0)

    async def arrived() -> bool:
        return (await dev.read(NOW))["temp_c"].value == 24.0

    await until(arrived, "a change over the secure channel")


async def test_secure_only_server_refuses_an_unsecured_client(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    certificates: dict[str, Path],
) -> None:
    security = Security(certificates["server_cert"], certificates["server_key"], SECURE_ONLY)
    plant = await start_server(security=security)
    dev = make_device(plant.url)  # security: none
    with pytest.raises(DeviceRefused, match="No matching endpoints"):  # it offers no None
        await dev.read(NOW)
    assert state(dev) is LinkState.OFFLINE and dev.backoff.failures == 1


async def test_server_without_the_wanted_mode_is_refused(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    certificates: dict[str, Path],
) -> None:
    only_sign = [ua.SecurityPolicyType.Basic256Sha256_Sign]
    security = Security(certificates["server_cert"], certificates["server_key"], only_sign)
    plant = await start_server(security=security)
    dev = make_device(
        plant.url,
        security="sign_and_encrypt",
        certificate=str(certificates["client_cert"]),
        private_key=str(certificates["client_key"]),
    )
    with pytest.raises(DeviceRefused, match="No matching endpoints"):
        await dev.read(NOW)


async def test_unreadable_key_is_a_setup_error(
    make_device: Callable[..., OpcUaDevice], certificates: dict[str, Path], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    dev = make_device(
        f"opc.tcp://127.0.0.1:{free_port()}/",
        security="sign",
        certificate=str(certificates["client_cert"]),
        private_key=str(junk),
    )
    with pytest.raises(SetupError, match="no usable private key"):
        await dev.read(NOW)
    assert dev.backoff.failures == 0  # nothing was sent: nothing to back off from


# ---------------------------------------------------------------------------- credentials

CREDENTIALS = {"username_env": "LATERNE_TEST_OPCUA_USER", "password_env": "LATERNE_TEST_OPCUA_PW"}


async def test_credentials_from_the_environment(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    clock: FakeClock,
) -> None:
    caplog.set_level(logging.DEBUG)
    plant = await start_server(users=OneUser("hausmeister", "s3cret-Pw"))
    dev = make_device(plant.url, **CREDENTIALS)

    monkeypatch.delenv("LATERNE_TEST_OPCUA_USER", raising=False)
    monkeypatch.delenv("LATERNE_TEST_OPCUA_PW", raising=False)
    with pytest.raises(MissingCredential, match="LATERNE_TEST_OPCUA_USER") as missing:
        await dev.read(NOW)
    assert missing.value.variable == "LATERNE_TEST_OPCUA_USER"
    monkeypatch.setenv("LATERNE_TEST_OPCUA_USER", "hausmeister")
    with pytest.raises(MissingCredential, match="LATERNE_TEST_OPCUA_PW"):
        await dev.read(NOW)
    assert state(dev) is LinkState.DISCONNECTED  # nothing was sent

    monkeypatch.setenv("LATERNE_TEST_OPCUA_PW", "wrong-Pw")
    with pytest.raises(BadStatus) as refused:
        await dev.read(NOW)
    assert refused.value.name in ("BadUserAccessDenied", "BadIdentityTokenRejected",
                                  "BadIdentityTokenInvalid")  # fmt: skip
    assert state(dev) is LinkState.OFFLINE

    monkeypatch.setenv("LATERNE_TEST_OPCUA_PW", "s3cret-Pw")  # read again at the next connect
    clock.advance(dev.backoff.remaining_s())
    assert values(await dev.read(NOW)) == SCHOOL
    assert "s3cret-Pw" not in caplog.text and "wrong-Pw" not in caplog.text  # not even DEBUG


# ------------------------------------------------------------------------- server restart


async def test_server_restart_recovers_subscription_without_loss_or_duplicates(
    start_server: StartServer, make_device: Callable[..., OpcUaDevice], clock: FakeClock
) -> None:
    old = await start_server()
    dev = make_device(old.url)
    assert values(await dev.read(NOW)) == SCHOOL
    assert dev.mode == "subscription"

    await old.stop()  # killed: its sessions and subscriptions die with it

    async def noticed() -> bool:
        return state(dev) is LinkState.OFFLINE

    await until(noticed, "the client notices the server is gone")
    with pytest.raises(DeviceOffline):
        await dev.read(NOW)
    assert dev.backoff.failures == 1

    # back on the same port, after a "firmware update": other NodeIds behind the same paths,
    # and other values
    new = await start_server(old.port, numeric_ids=True)
    await new.set("temp", 18.0)
    with pytest.raises(DeviceOffline, match="next attempt in"):  # still backing off
        await dev.read(NOW)
    clock.advance(dev.backoff.remaining_s())

    readings = await dev.read(NOW)
    assert values(readings) == {**SCHOOL, "temp_c": 18.0}  # every point GOOD, none lost
    assert state(dev) is LinkState.CONNECTED and dev.mode == "subscription"
    assert dev.subscriptions_created == 2
    assert new.subscriptions == 1 and new.items_created == len(POINTS)  # no duplicates
    new.reads.clear()

    await new.set("temp", 19.5)  # a change after the restart arrives by the new subscription

    async def arrived() -> bool:
        return (await dev.read(NOW))["temp_c"].value == 19.5

    await until(arrived, "a change after the restart")
    assert new.reads == []
    assert await dev.write("setpoint_c", 22.0) == 22.0  # re-resolved: the new node is written
    assert await new.nodes["setpoint"].read_value() == 22.0

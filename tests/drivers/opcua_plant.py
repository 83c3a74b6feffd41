"""What the OPC-UA driver tests against real asyncua servers on 127.0.0.1 share.

:func:`start_server` builds "the school" (a plant of four nodes behind browse paths, optionally
with other NodeIds behind the same paths, secured, or with one user) on a port, and counts,
through asyncua's server callbacks, the external Read requests that touch our nodes and the
monitored items created; :func:`make_device` makes an :class:`OpcUaDevice` for it on a fake
clock and closes it after the test; :func:`certificates` writes a server's and Laterne's
certificates once per module. Timing never decides an assertion: waits are bounded loops on a
condition (:func:`until`).
"""

from __future__ import annotations

import asyncio
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
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from laterne.drivers.backoff import Backoff
from laterne.drivers.field.opcua import LinkState, Mode, OpcUaDevice
from laterne.models.site import Device, DeviceProfile
from laterne.models.values import Quality

from .conftest import FakeClock, free_port, profile

__all__ = [
    "NOW",
    "POINTS",
    "SAE_ONLY",
    "SCHOOL",
    "SECURE_ONLY",
    "SETPOINT_PATH",
    "TEMP_PATH",
    "TIMEOUT_S",
    "VT",
    "WAIT_S",
    "OneUser",
    "Plant",
    "Security",
    "StartServer",
    "certificates",
    "make_device",
    "mode",
    "opcua_device",
    "secure",
    "start_server",
    "state",
    "trust_store",
    "until",
    "validate_against",
    "values",
    "write_certificate",
]

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


# ------------------------------------------------------------------------- certificates


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
SAE_ONLY = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]


def secure(certificates: dict[str, Path], mode: str = "sign_and_encrypt") -> dict[str, str]:
    """The endpoint fields of a secured device with our client certificate."""
    return {
        "security": mode,
        "certificate": str(certificates["client_cert"]),
        "private_key": str(certificates["client_key"]),
    }


async def trust_store(folder: Path) -> TrustStore:
    store = TrustStore([folder], [])
    await store.load()
    return store


def validate_against(store: TrustStore) -> CertificateValidator:
    options = (
        CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
    )
    return CertificateValidator(options, store)

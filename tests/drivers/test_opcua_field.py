"""The OPC-UA field report, against real asyncua servers on 127.0.0.1: a server that refuses our
certificate (by status code at CreateSession, or by answering OpenSecureChannel with a fault as a
Node.js server does), the error kind kept while backing off, and NodeIds by namespace URI.

Every failure must leave the driver as one typed error: the device is FAULTY or OFFLINE with the
server's cause, and nothing else escapes into the runtime.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.server import Server
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import BadCertificateUntrusted, BadNodeIdUnknown, UaError
from cryptography.x509.oid import ExtendedKeyUsageOID

from laterne.drivers.errors import (
    BadStatus,
    CertificateRejected,
    DeviceOffline,
    DeviceRefused,
    DriverError,
    ProtocolError,
    UnknownNamespace,
    again,
    map_opcua_exceptions,
)
from laterne.drivers.opcua import LinkState, OpcUaDevice
from laterne.drivers.opcua_paths import format_node_id, node_id
from laterne.drivers.opcua_security import apply_security
from laterne.models.opcua_address import parse_node_id
from laterne.models.site import OpcUaEndpoint
from laterne.models.values import Quality

from .conftest import FakeClock, free_port
from .test_opcua_depth import (
    NOW,
    SCHOOL,
    SECURE_ONLY,
    Security,
    StartServer,
    certificates,
    make_device,
    start_server,
    state,
    values,
    write_certificate,
)

__all__ = ["certificates", "make_device", "start_server"]  # fixtures used by name below

VT = ua.VariantType
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


@pytest.fixture
async def stranger_only(tmp_path: Path) -> TrustStore:
    """A trust store holding one certificate that is not ours."""
    folder = tmp_path / "trusted"
    folder.mkdir()
    keys = tmp_path / "keys"
    keys.mkdir()
    cert, _key = write_certificate(
        keys, "stranger", "urn:stranger", ExtendedKeyUsageOID.CLIENT_AUTH
    )
    (folder / "stranger.der").write_bytes(cert.read_bytes())
    return await trust_store(folder)


def validate_against(store: TrustStore) -> CertificateValidator:
    options = (
        CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
    )
    return CertificateValidator(options, store)


# ------------------------------------------------------------------ a refused certificate


async def test_untrusted_certificate_refused_at_create_session_is_certificate_rejected(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    certificates: dict[str, Path],
    stranger_only: TrustStore,
    clock: FakeClock,
) -> None:
    security = Security(certificates["server_cert"], certificates["server_key"], SAE_ONLY)
    plant = await start_server(security=security)
    plant.server.set_certificate_validator(validate_against(stranger_only))
    dev = make_device(plant.url, **secure(certificates))

    with pytest.raises(CertificateRejected) as refused:
        await dev.read(NOW)
    err = refused.value
    assert err.code == StatusCodes.BadCertificateUntrusted
    assert isinstance(err.__cause__, BadCertificateUntrusted)
    assert "the server refused our client certificate (BadCertificateUntrusted" in str(err)
    assert "trust Laterne's client certificate on the server" in str(err)
    assert str(err).startswith(f"opcua school ({plant.url})")
    assert isinstance(err, DeviceRefused)  # the runtime makes the device FAULTY
    assert state(dev) is LinkState.OFFLINE and dev.backoff.failures == 1

    # backing off: the same class, the same cause, and when the next attempt is
    for _ in range(3):
        with pytest.raises(CertificateRejected, match="next attempt in") as again_refused:
            await dev.read(NOW)
        assert "BadCertificateUntrusted" in str(again_refused.value)
        assert again_refused.value.code == StatusCodes.BadCertificateUntrusted
    assert dev.backoff.failures == 1  # none of those touched the network

    clock.advance(dev.backoff.remaining_s())
    with pytest.raises(CertificateRejected, match="BadCertificateUntrusted"):
        await dev.read(NOW)  # a real attempt, refused again
    assert dev.backoff.failures == 2


@dataclass
class OpenRefusal:
    """Makes an asyncua server refuse an untrusted client certificate the way node-opcua does:
    it answers OpenSecureChannel with a ServiceFault (BadCertificateUntrusted), signed and
    encrypted for the client, and closes the connection."""

    trusted: set[bytes]
    refused: int = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = UaProcessor.open_secure_channel
        refusal = self

        def open_secure_channel(proc: UaProcessor, algohdr: Any, seqhdr: Any, body: Any) -> None:
            cert = algohdr.SenderCertificate
            if not cert or cert in refusal.trusted:
                original(proc, algohdr, seqhdr, body)
                return
            refusal.refused += 1
            request = struct_from_binary(ua.OpenSecureChannelRequest, body)
            connection = proc._connection
            connection.select_policy(
                algohdr.SecurityPolicyURI, cert, request.Parameters.SecurityMode
            )
            fault = ua.ServiceFault()
            fault.ResponseHeader.ServiceResult = ua.StatusCode(
                ua.UInt32(StatusCodes.BadCertificateUntrusted)
            )
            proc.send_response(
                request.RequestHeader.RequestHandle, seqhdr, fault, ua.MessageType.SecureOpen
            )
            proc._transport.close()

        monkeypatch.setattr(UaProcessor, "open_secure_channel", open_secure_channel)


async def test_open_secure_channel_refused_with_a_fault_is_certificate_rejected(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    certificates: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
) -> None:
    refusal = OpenRefusal(trusted=set())
    refusal.install(monkeypatch)
    security = Security(certificates["server_cert"], certificates["server_key"], SAE_ONLY)
    plant = await start_server(security=security)

    # what the field saw: asyncua itself fails with a bare AssertionError
    raw = Client(plant.url, timeout=2)
    endpoint = OpcUaEndpoint.model_validate({"url": plant.url, **secure(certificates)})
    await apply_security(raw, endpoint, "raw")
    with pytest.raises(AssertionError):
        await raw.connect(auto_reconnect=False)

    dev = make_device(plant.url, **secure(certificates))
    with pytest.raises(CertificateRejected) as refused:
        await dev.read(NOW)
    message = str(refused.value)
    assert "the server refused our client certificate" in message
    assert "OpenSecureChannel" in message and "AssertionError" in message
    assert "trust Laterne's client certificate on the server" in message
    assert refused.value.code is None  # the fault's code never reaches asyncua's caller
    assert refusal.refused == 2
    with pytest.raises(CertificateRejected, match="next attempt in"):
        await dev.read(NOW)

    # trusted now: the same device connects at its next attempt
    refusal.trusted.add(certificates["client_cert"].read_bytes())
    clock.advance(dev.backoff.remaining_s())
    assert values(await dev.read(NOW)) == SCHOOL


async def test_trusted_certificate_connects_through_the_validator(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    certificates: dict[str, Path],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "trusted"
    folder.mkdir()
    (folder / "laterne.der").write_bytes(certificates["client_cert"].read_bytes())
    security = Security(certificates["server_cert"], certificates["server_key"], SAE_ONLY)
    plant = await start_server(security=security)
    plant.server.set_certificate_validator(validate_against(await trust_store(folder)))
    dev = make_device(plant.url, **secure(certificates))
    assert values(await dev.read(NOW)) == SCHOOL


# ------------------------------------------------------------- one kind while backing off


async def test_refused_session_keeps_its_class_and_cause_while_backing_off(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    certificates: dict[str, Path],
    clock: FakeClock,
) -> None:
    security = Security(certificates["server_cert"], certificates["server_key"], SECURE_ONLY)
    plant = await start_server(security=security)
    dev = make_device(plant.url)  # security: none, against a secure-only server
    errors: list[DriverError] = []
    for i in range(6):
        with pytest.raises(DriverError) as info:
            await dev.read(NOW)
        errors.append(info.value)
        if i == 3:
            clock.advance(dev.backoff.remaining_s())  # one more real attempt in between
    assert {type(e) for e in errors} == {DeviceRefused}  # FAULTY every time, never OFFLINE
    assert all("No matching endpoints" in str(e) for e in errors)
    assert all("next attempt in" in str(e) for e in errors[1:4] + errors[5:])
    assert "offline" not in " ".join(str(e) for e in errors)
    assert dev.backoff.failures == 2


async def test_unreachable_server_keeps_offline_and_its_cause(
    make_device: Callable[..., OpcUaDevice],
) -> None:
    dev = make_device(f"opc.tcp://127.0.0.1:{free_port()}/nobody/")
    with pytest.raises(DeviceOffline) as first:
        await dev.read(NOW)
    cause = str(first.value)
    for _ in range(3):
        with pytest.raises(DeviceOffline) as later:
            await dev.read(NOW)
        assert type(later.value) is DeviceOffline
        assert str(later.value).startswith(cause + "; next attempt in")


# ------------------------------------------------------------------ the mapping, one by one


async def open_secure_channel(exc: BaseException) -> None:
    """Raises ``exc`` from a frame named as asyncua's, as asyncua does."""
    raise exc


async def find_endpoint() -> None:
    raise UaError("No matching endpoints: 1, http://opcfoundation.org/UA/SecurityPolicy#None")


@pytest.mark.parametrize(
    ("exc", "secured", "mapped", "says"),
    [
        (AssertionError(), True, CertificateRejected, "asyncua: AssertionError"),
        (AssertionError(), False, ProtocolError, "OPC-UA protocol error (AssertionError)"),
        (ConnectionResetError(104, "Connection reset"), True, CertificateRejected, "closed"),
        (ConnectionResetError(104, "Connection reset"), False, DeviceOffline, "Connection reset"),
        (TimeoutError(), True, DriverError, "no answer in time"),  # a timeout stays a timeout
        (BadCertificateUntrusted(), False, CertificateRejected, "BadCertificateUntrusted"),  # type: ignore[no-untyped-call]
        (struct.error("unpack requires 4 bytes"), False, ProtocolError, "unpack requires"),
        (ValueError("bad value"), False, ProtocolError, "(ValueError: bad value)"),
        (UaError("Unsupported message type"), False, ProtocolError, "Unsupported message"),
        (BadNodeIdUnknown(), True, BadStatus, "BadNodeIdUnknown"),  # type: ignore[no-untyped-call]
    ],
)
async def test_every_asyncua_failure_becomes_a_driver_error(
    exc: BaseException, secured: bool, mapped: type[DriverError], says: str
) -> None:
    with pytest.raises(mapped) as info, map_opcua_exceptions("dev", opening_secure_channel=secured):
        await open_secure_channel(exc)
    assert says in str(info.value) and str(info.value).startswith("dev: ")
    assert info.value.__cause__ is exc
    if mapped is ProtocolError:
        assert isinstance(info.value, ProtocolError) and info.value.kind == type(exc).__name__


async def test_no_matching_endpoint_is_a_refusal_and_cancellation_passes() -> None:
    with (
        pytest.raises(DeviceRefused, match="offers no endpoint") as info,
        map_opcua_exceptions("d"),
    ):
        await find_endpoint()
    assert type(info.value) is DeviceRefused
    with pytest.raises(asyncio.CancelledError), map_opcua_exceptions("d"):
        raise asyncio.CancelledError
    with pytest.raises(KeyboardInterrupt), map_opcua_exceptions("d"):
        raise KeyboardInterrupt


def test_again_is_a_fresh_error_of_the_same_class() -> None:
    original = CertificateRejected(
        "BadCertificateUntrusted", "dev", StatusCodes.BadCertificateUntrusted
    )
    try:
        raise original
    except CertificateRejected as exc:
        caught = exc
    fresh = again(caught, f"{caught}; next attempt in 1.0 s")
    assert type(fresh) is CertificateRejected and fresh.code == caught.code
    assert str(fresh) == f"{caught}; next attempt in 1.0 s"
    assert fresh.__traceback__ is None and fresh.__cause__ is None
    assert str(again(caught)) == str(caught)


# ---------------------------------------------------------------- NodeIds by namespace URI

PLANT_URI = "urn:laterne:field:plant"


@dataclass
class NsPlant:
    server: Server
    url: str
    port: int
    index: int  # of PLANT_URI

    async def stop(self) -> None:
        await self.server.stop()


StartNsPlant = Callable[..., Awaitable[NsPlant]]


@pytest.fixture
async def ns_plant() -> AsyncIterator[StartNsPlant]:
    """A server whose plant lives in the namespace PLANT_URI, registered after ``before``
    other namespaces (so its index depends on them). The same string ids exist in a decoy
    namespace too, with other values, so a point read from the wrong index shows."""
    servers: list[Server] = []

    async def start(before: list[str], temp: float, port: int | None = None) -> NsPlant:
        port = port if port is not None else free_port()
        server = Server()
        await server.init()
        url = f"opc.tcp://127.0.0.1:{port}/field/"
        server.set_endpoint(url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        for uri in before:
            await server.register_namespace(uri)
        decoy = await server.register_namespace("urn:laterne:field:decoy")
        idx = await server.register_namespace(PLANT_URI)
        objects = server.nodes.objects
        for ns, value in ((decoy, -99.0), (idx, temp)):
            node = await objects.add_variable(ua.NodeId("temp", ns), f"{ns}:Temp", value)
            await node.set_writable()
        await objects.add_variable(
            ua.NodeId(ua.Guid("09087e75-8e5e-499b-954f-f2a9603db28a"), ua.Int16(idx)),
            f"{idx}:Flow", 12.5, varianttype=VT.Float,
        )  # fmt: skip
        await objects.add_variable(ua.NodeId(4711, idx), f"{idx}:Count", 42, varianttype=VT.UInt32)
        await server.start()
        servers.append(server)
        return NsPlant(server, url, port, idx)

    yield start
    for server in servers:
        try:
            await server.stop()
        except Exception:  # already stopped by the test
            pass


NSU_POINTS: dict[str, dict[str, Any]] = {
    "temp_c": {"node": f"nsu={PLANT_URI};s=temp", "writable": True, "min": -40, "max": 60},
    "flow": {"node": f"nsu={PLANT_URI};g=09087E75-8E5E-499B-954F-F2A9603DB28A", "max": 100},
    "count": {"node": f"nsu={PLANT_URI};i=4711", "max": 1e9},
    "ghost": {"node": "nsu=urn:nobody:knows;s=temp", "writable": True, "min": 0, "max": 100},
}


@pytest.mark.parametrize("subscribe", [True, False])
async def test_nsu_node_ids_resolve_at_every_connect(
    ns_plant: StartNsPlant,
    make_device: Callable[..., OpcUaDevice],
    clock: FakeClock,
    subscribe: bool,
) -> None:
    plant = await ns_plant(["urn:a"], temp=21.5)
    assert plant.index == 4
    dev = make_device(plant.url, NSU_POINTS, subscribe=subscribe)
    readings = await dev.read(NOW)
    assert values(readings) == {"temp_c": 21.5, "flow": 12.5, "count": 42.0}
    ghost = readings["ghost"]
    assert ghost.quality is Quality.FAULTY
    assert "'urn:nobody:knows'" in ghost.error and f"[4] {PLANT_URI}" in ghost.error
    assert "[0] http://opcfoundation.org/UA/" in ghost.error
    assert await dev.write("temp_c", 22.0) == 22.0
    with pytest.raises(UnknownNamespace, match="urn:nobody:knows") as unknown:
        await dev.write("ghost", 1.0)
    assert unknown.value.uri == "urn:nobody:knows" and PLANT_URI in unknown.value.known

    # restarted with its namespaces in another order: the URI now has another index
    await plant.stop()
    moved = await ns_plant(["urn:a", "urn:b", "urn:c"], temp=18.0, port=plant.port)
    assert moved.index == 6
    await dev.close()  # as after a lost connection: the next read connects anew
    clock.advance(dev.backoff.remaining_s())
    readings = await dev.read(NOW)
    assert values(readings) == {"temp_c": 18.0, "flow": 12.5, "count": 42.0}  # not the decoy
    assert f"[6] {PLANT_URI}" in readings["ghost"].error


def test_node_ids_from_the_model_parser_round_trip() -> None:
    namespaces = ["http://opcfoundation.org/UA/", "urn:s", PLANT_URI, "urn:t"]
    for text in (
        "i=2258",
        "ns=2;s=School.Room1.Temperature",
        "ns=2;s=a;b=c",  # a string identifier may hold ';' and '='
        "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a",
        "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
        "ns=2;i=70000",
    ):
        nid = node_id(parse_node_id(text))
        assert nid == ua.NodeId.from_string(text)  # what asyncua makes of the same text
        assert format_node_id(nid) == text
        uri_form = format_node_id(nid, namespaces)
        assert uri_form.startswith(f"nsu={namespaces[nid.NamespaceIndex]};")
        assert parse_node_id(uri_form).namespace_uri == namespaces[nid.NamespaceIndex]
    with pytest.raises(ValueError, match="not resolved"):
        node_id(parse_node_id(f"nsu={PLANT_URI};s=x"))

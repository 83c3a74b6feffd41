"""Secured OPC-UA sessions, against real asyncua servers on 127.0.0.1: sign and
sign-and-encrypt with Laterne's certificate (the server's pinned or not), servers that refuse
an unsecured client or the wanted mode, an unreadable key, credentials from the environment,
and a server that refuses our certificate (by status code at CreateSession, or by answering
OpenSecureChannel with a fault as a Node.js server does) or trusts it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.truststore import TrustStore
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import BadCertificateUntrusted
from cryptography.x509.oid import ExtendedKeyUsageOID

from laterne.drivers.field.errors import (
    BadStatus,
    CertificateRejected,
    DeviceRefused,
    MissingCredential,
    SetupError,
)
from laterne.drivers.field.opcua import LinkState, OpcUaDevice
from laterne.drivers.field.opcua_security import apply_security
from laterne.models.site import OpcUaEndpoint

from ..conftest import FakeClock, free_port
from ..opcua_plant import (
    NOW,
    SAE_ONLY,
    SCHOOL,
    SECURE_ONLY,
    OneUser,
    Security,
    StartServer,
    certificates,
    make_device,
    secure,
    start_server,
    state,
    trust_store,
    until,
    validate_against,
    values,
    write_certificate,
)

__all__ = ["certificates", "make_device", "start_server"]  # fixtures, used by name below


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


# ------------------------------------------------------------------ secure channels


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

"""`laterne browse` and `laterne opcua-cert` as a user runs them (the installed command, in a
subprocess), against real asyncua servers on 127.0.0.1 in the test's own event loop.

What the commands print must be usable as it is: the ids `browse` lists read the right values
through the driver, and the certificate `opcua-cert` makes connects with sign_and_encrypt to a
server that trusts exactly that certificate.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua.crypto.truststore import TrustStore
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from laterne.drivers.field.errors import CertificateRejected
from laterne.drivers.field.opcua import OpcUaDevice

from ..conftest import free_port
from ..opcua_plant import (
    NOW,
    SCHOOL,
    SECURE_ONLY,
    Security,
    StartServer,
    certificates,
    make_device,
    start_server,
    validate_against,
    values,
)

__all__ = ["certificates", "make_device", "start_server"]  # fixtures used by name below

LATERNE = str(Path(sys.executable).parent / "laterne")
RUN_S = 60.0  # upper bound of one command's run


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def laterne(*args: str) -> Ran:
    """Run the installed `laterne` with ``args``; the servers keep serving meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        LATERNE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"laterne {' '.join(args)} did not end within {RUN_S} s")
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def one_line_error(ran: Ran) -> str:
    assert ran.code == 1, (ran.out, ran.err)
    assert "Traceback" not in ran.err + ran.out
    assert len(ran.err.strip().splitlines()) == 1, ran.err
    return ran.err.strip()


# ------------------------------------------------------------------------------- browse


async def test_browse_lists_the_servers_nodes_with_ids_that_read_right(
    start_server: StartServer, make_device: Callable[..., OpcUaDevice]
) -> None:
    plant = await start_server()
    ran = await laterne("browse", plant.url)
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert "    2  urn:laterne:test" in lines
    assert "    0  http://opcfoundation.org/UA/" in lines
    assert "  None             none" in lines  # the endpoint it offers

    def entry(path: str) -> tuple[str, str]:
        i = next(i for i, line in enumerate(lines) if f"  {path}  " in line + "  ")
        return lines[i], lines[i + 1]

    temp, temp_ids = entry("2:School/2:Classrooms/2:Temperature")
    assert temp.startswith("  variable") and "Double = 21.5" in temp and "(read-only)" in temp
    assert temp_ids.split() == ["node:", '"nsu=urn:laterne:test;s=temp"', "or", '"ns=2;s=temp"']
    setpoint, _ = entry("2:School/2:Classrooms/2:Setpoint")
    assert "Float = 19.0" in setpoint and "(read/write)" in setpoint
    valve, _ = entry("2:School/2:Valve")
    assert "UInt16 = 250" in valve
    school, school_ids = entry("2:School")
    assert school.startswith("  object") and '"ns=2;s=school"' in school_ids
    assert "Server" not in ran.out.split("objects and variables")[1]  # namespace 0 left out
    assert lines[-1] == "6 nodes"

    # the ids as printed, used as a profile: every point reads its value
    ran = await laterne("browse", plant.url, "--json")
    listing = json.loads(ran.out)
    assert listing["namespaces"][2] == "urn:laterne:test" and not listing["truncated"]
    by_path = {n["browse_path"]: n for n in listing["nodes"]}
    wanted = {
        "temp_c": "2:School/2:Classrooms/2:Temperature",
        "setpoint_c": "2:School/2:Classrooms/2:Setpoint",
        "gym_setpoint_c": "2:School/2:GymSetpoint",
        "valve_pct": "2:School/2:Valve",
    }
    points: dict[str, dict[str, Any]] = {
        name: {"node": by_path[path]["node_id_uri"], "min": -40, "max": 1000}
        for name, path in wanted.items()
    }
    points |= {f"{name}_by_index": {"node": by_path[path]["node_id"], "max": 1000}
               for name, path in wanted.items()}  # fmt: skip
    readings = await make_device(plant.url, points).read(NOW)
    expected = {**SCHOOL, "valve_pct": 250.0}  # raw: the printed ids carry no scale
    assert values(readings) == {**expected, **{f"{k}_by_index": v for k, v in expected.items()}}


async def test_browse_depth_and_node_bounds(start_server: StartServer) -> None:
    plant = await start_server()
    ran = await laterne("browse", plant.url, "--depth", "1")
    assert ran.code == 0, ran.err
    assert "2:School\n" in ran.out and "2:School/" not in ran.out
    assert ran.out.splitlines()[-1] == "1 node; more below (raise --depth or --max-nodes)"
    ran = await laterne("browse", plant.url, "--max-nodes", "2", "--json")
    listing = json.loads(ran.out)
    assert len(listing["nodes"]) == 2 and listing["truncated"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:4840/", "must begin with opc.tcp://"),
        ("opc.tcp://127.0.0.1/x", "needs a port"),
    ],
)
async def test_browse_refuses_a_bad_url_in_one_line(url: str, says: str) -> None:
    assert says in one_line_error(await laterne("browse", url))


async def test_browse_of_nothing_listening_is_one_line() -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/nobody/"
    error = one_line_error(await laterne("browse", url))
    assert error.startswith(f"opcua {url}: ") and "Connect call failed" in error


# ---------------------------------------------------------------------------- opcua-cert


async def make_cert(out: Path, name: str) -> Ran:
    ran = await laterne("opcua-cert", "--out", str(out), "--name", name, "--days", "30")
    assert ran.code == 0, ran.err
    return ran


async def test_opcua_cert_connects_to_a_server_that_trusts_exactly_it(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    certificates: dict[str, Path],
    tmp_path: Path,
) -> None:
    pki = tmp_path / "pki"
    ran = await make_cert(pki, "laterne")
    cert_der, cert_pem, key = (pki / n for n in ("laterne-cert.der", "laterne-cert.pem",
                                                  "laterne-key.pem"))  # fmt: skip
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_der_x509_certificate(cert_der.read_bytes())
    assert x509.load_pem_x509_certificate(cert_pem.read_bytes()) == cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (uri,) = san.get_values_for_type(x509.UniformResourceIdentifier)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment
    assert usage.key_encipherment and usage.data_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert f"application URI  {uri}" in ran.out
    assert f"certificate: {cert_der}" in ran.out and f"private_key: {key}" in ran.out
    assert "server_certificate:" in ran.out and "--save-server-certificate" in ran.out

    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "laterne.der").write_bytes(cert_der.read_bytes())
    store = TrustStore([trusted], [])
    await store.load()
    sae = Security(certificates["server_cert"], certificates["server_key"], SECURE_ONLY[1:])
    plant = await start_server(security=sae)
    # full validation: trusted, time, key usage, and the URI the client announces
    plant.server.set_certificate_validator(validate_against(store))
    security = {"security": "sign_and_encrypt", "private_key": str(key)}
    dev = make_device(plant.url, certificate=str(cert_der), **security)
    assert values(await dev.read(NOW)) == SCHOOL
    assert await dev.write("gym_setpoint_c", 21.0) == 21.0

    # PEM works as well; a certificate the server does not trust does not
    assert values(await make_device(plant.url, certificate=str(cert_pem), **security).read(NOW))
    await make_cert(pki, "intruder")
    intruder = {"certificate": str(pki / "intruder-cert.der"),
                "private_key": str(pki / "intruder-key.pem")}  # fmt: skip
    with pytest.raises(CertificateRejected, match="BadCertificateUntrusted"):
        await make_device(plant.url, security="sign_and_encrypt", **intruder).read(NOW)

    # and browse, secured with it, saving the server's certificate on the way
    saved = tmp_path / "server.der"
    ran = await laterne(
        "browse", plant.url, "--security", "sign_and_encrypt", "--certificate", str(cert_der),
        "--private-key", str(key), "--save-server-certificate", str(saved),
    )  # fmt: skip
    assert ran.code == 0, ran.err
    assert '"nsu=urn:laterne:test;s=temp"' in ran.out
    assert saved.read_bytes() == certificates["server_cert"].read_bytes()
    assert "wrote the server's certificate" in ran.err
    pinned = make_device(plant.url, server_certificate=str(saved), certificate=str(cert_der),
                         **security)  # fmt: skip
    assert values(await pinned.read(NOW)) == {**SCHOOL, "gym_setpoint_c": 21.0}  # written above

    # browse with a certificate the server refuses: one line that says what to do
    ran = await laterne(
        "browse", plant.url, "--security", "sign_and_encrypt", "--certificate",
        intruder["certificate"], "--private-key", intruder["private_key"],
    )  # fmt: skip
    error = one_line_error(ran)
    assert "the server refused our client certificate" in error
    assert "trust Laterne's client certificate on the server" in error


async def test_opcua_cert_does_not_replace_a_certificate(tmp_path: Path) -> None:
    await make_cert(tmp_path, "laterne")
    before = (tmp_path / "laterne-key.pem").read_bytes()
    error = one_line_error(await laterne("opcua-cert", "--out", str(tmp_path)))
    assert "not replacing" in error and "--force" in error
    assert (tmp_path / "laterne-key.pem").read_bytes() == before
    ran = await laterne("opcua-cert", "--out", str(tmp_path), "--force")
    assert ran.code == 0 and (tmp_path / "laterne-key.pem").read_bytes() != before

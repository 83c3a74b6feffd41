"""The OPC-UA commands of `laterne`: `browse` (what a server really has) and `opcua-cert`.

Rule: part of the composition root, registered on the one ``laterne`` app by :func:`register`.
Argument handling and printing only: browsing is :mod:`laterne.drivers.field.opcua_browse`, making a
certificate :func:`laterne.drivers.field.opcua_security.make_client_certificate`. Every failure the
user can cause or meet (a bad URL, a refused connection, a refused certificate, a file that
exists) is one line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError

from laterne.drivers.field.errors import DriverError, again
from laterne.drivers.field.opcua_browse import (
    BrowseResult,
    ServerEndpoint,
    browse_server,
    check_url,
    server_endpoints,
)
from laterne.drivers.field.opcua_security import make_client_certificate
from laterne.models.site import OpcUaEndpoint

__all__ = ["register"]


class Security(StrEnum):
    """``security`` of an OPC-UA endpoint, as in the site file."""

    none = "none"
    sign = "sign"
    sign_and_encrypt = "sign_and_encrypt"


def register(app: typer.Typer) -> None:
    """Add ``browse`` and ``opcua-cert`` to ``app``."""
    app.command("browse")(browse)
    app.command("opcua-cert")(opcua_cert)


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code=1)


def _quiet_asyncua() -> None:
    # asyncua logs tracebacks at ERROR for what we report as one line (a refused certificate)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)


# ------------------------------------------------------------------------------- browse


def browse(
    url: Annotated[str, typer.Argument(help="the server's endpoint, opc.tcp://HOST:PORT/path")],
    depth: Annotated[
        int, typer.Option(min=1, max=32, help="levels below the Objects folder to list")
    ] = 3,
    max_nodes: Annotated[int, typer.Option(min=1, help="stop listing after this many")] = 2000,
    security: Annotated[Security, typer.Option(help="as the endpoint's `security`")] = (
        Security.none
    ),
    certificate: Annotated[
        Path | None, typer.Option(help="our client certificate (for sign/sign_and_encrypt)")
    ] = None,
    private_key: Annotated[Path | None, typer.Option(help="its private key (PEM)")] = None,
    server_certificate: Annotated[
        Path | None, typer.Option(help="pin the server's certificate (DER or PEM)")
    ] = None,
    username_env: Annotated[
        str | None, typer.Option(help="environment variable holding the user name")
    ] = None,
    password_env: Annotated[
        str | None, typer.Option(help="environment variable holding the password")
    ] = None,
    save_server_certificate: Annotated[
        Path | None,
        typer.Option(help="write the server's certificate (DER) here, for `server_certificate:`"),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="per request [s]")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of text")] = False,
) -> None:
    """List an OPC-UA server's namespaces, objects and variables.

    With node ids (nsu= and ns= forms), browse paths, data types and current values: write a
    device profile from what the server really has.
    """
    _quiet_asyncua()
    fields: dict[str, object] = {"url": url, "security": security.value}
    for key, value in (
        ("certificate", certificate),
        ("private_key", private_key),
        ("server_certificate", server_certificate),
    ):
        if value is not None:
            fields[key] = str(value.resolve())
    if username_env is not None or password_env is not None:
        fields |= {"username_env": username_env, "password_env": password_env}
    try:
        endpoint = OpcUaEndpoint.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "endpoint"
        _fail(f"cannot browse {url}: {where}: {first['msg']}")
    try:
        result = asyncio.run(_browse(endpoint, depth, max_nodes, timeout, save_server_certificate))
    except DriverError as exc:
        _fail(str(exc))
    except OSError as exc:  # writing the server certificate
        _fail(f"cannot write the server certificate: {exc}")
    if as_json:
        typer.echo(json.dumps(_as_json(result), indent=2))
    else:
        typer.echo(_as_text(result, depth))


async def _browse(
    endpoint: OpcUaEndpoint,
    depth: int,
    max_nodes: int,
    timeout_s: float,
    save_to: Path | None,
) -> BrowseResult:
    check_url(endpoint.url)
    endpoints = await server_endpoints(endpoint.url, timeout_s)
    if save_to is not None:
        _save_server_certificate(endpoints, endpoint, save_to)
    try:
        return await browse_server(
            endpoint, depth=depth, max_nodes=max_nodes, timeout_s=timeout_s, endpoints=endpoints
        )
    except DriverError as exc:
        offered = ", ".join(f"{e.security_policy} {e.security}" for e in endpoints)
        raise again(exc, f"{exc} (the server offers: {offered})") from exc


def _save_server_certificate(
    endpoints: tuple[ServerEndpoint, ...], endpoint: OpcUaEndpoint, path: Path
) -> None:
    wanted = [e for e in endpoints if e.certificate and e.security == endpoint.security]
    chosen = (wanted or [e for e in endpoints if e.certificate])[:1]
    if not chosen:
        raise DriverError(f"opcua {endpoint.url}: the server sends no certificate (no security)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(chosen[0].certificate)
    typer.echo(
        f"wrote the server's certificate to {path} (SHA-1 {chosen[0].thumbprint}); compare the "
        "thumbprint with the one the server shows before you trust it",
        err=True,
    )


def _as_text(result: BrowseResult, depth: int) -> str:
    lines = [f"OPC-UA server {result.url}", "", "endpoints (security policy, mode):"]
    for e in result.endpoints:
        sha = f"   server certificate SHA-1 {e.thumbprint}" if e.thumbprint else ""
        lines.append(f"  {e.security_policy:<16} {e.security:<17}{sha}".rstrip())
    lines += ["", "namespaces (index, URI):"]
    lines += [f"  {i:>3}  {uri}" for i, uri in enumerate(result.namespaces)]
    lines += ["", f"objects and variables below Objects (depth {depth}; namespace 0 left out):"]
    for n in result.nodes:
        path = n.browse_path if n.browse_path is not None else "(no browse path: a name holds '/')"
        if n.node_class == "variable":
            access = "read/write" if n.writable else "read-only"
            lines.append(f"  variable  {path}  {n.data_type or '?'} = {n.value}  ({access})")
        else:
            lines.append(f"  object    {path}")
        lines.append(f'            node: "{n.node_id_uri}"   or   "{n.node_id}"')
    more = "; more below (raise --depth or --max-nodes)" if result.truncated else ""
    count = len(result.nodes)
    lines += ["", f"{count} node{'' if count == 1 else 's'}{more}"]
    return "\n".join(lines)


def _as_json(result: BrowseResult) -> dict[str, object]:
    return {
        "url": result.url,
        "namespaces": list(result.namespaces),
        "endpoints": [
            {"security_policy": e.security_policy, "security": e.security, "sha1": e.thumbprint}
            for e in result.endpoints
        ],
        "nodes": [asdict(n) for n in result.nodes],
        "truncated": result.truncated,
    }


# ----------------------------------------------------------------------------- certificate


def opcua_cert(
    out: Annotated[Path, typer.Option(help="folder for the certificate and key")],
    name: Annotated[
        str, typer.Option(help="application name: file names, CN and the application URI")
    ] = "laterne",
    days: Annotated[int, typer.Option(min=1, help="validity [days]")] = 3650,
    host: Annotated[
        str | None, typer.Option(help="this host's name (or IP) in the certificate")
    ] = None,
    force: Annotated[bool, typer.Option(help="replace existing files")] = False,
) -> None:
    """Make Laterne's OPC-UA client certificate and private key (Basic256Sha256).

    Writes NAME-cert.der, NAME-cert.pem and NAME-key.pem (mode 0600) into --out and prints the
    site-file lines and how to trust the certificate on the server.
    """
    host = host or socket.gethostname()
    try:
        made = make_client_certificate(name, host, days)
    except ValueError as exc:
        _fail(f"cannot make a certificate: {exc}")
    files = {
        out / f"{name}-cert.der": made.certificate_der,
        out / f"{name}-cert.pem": made.certificate_pem,
        out / f"{name}-key.pem": made.private_key_pem,
    }
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        _fail(f"not replacing {', '.join(existing)} (a server may trust it); add --force")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, data in files.items():
            _write(path, data, secret=path.name.endswith("-key.pem"))
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror or exc}")
    until = (datetime.now(UTC) + timedelta(days=days)).date().isoformat()
    der, pem, key = (out / f"{name}-cert.der", out / f"{name}-cert.pem", out / f"{name}-key.pem")
    server = out / "server.der"
    url = "opc.tcp://SERVER:4840/PATH"
    lines = [
        f"wrote {der} and {pem} (client certificate)",
        f"  and {key} (private key, mode 0600)",
        f"application URI  {made.application_uri}",
        f"SHA-1            {made.thumbprint}",
        f"valid until      {until}",
        "",
        "In the site file, on the device's endpoint (paths relative to the site file):",
        "",
        "    endpoint:",
        f"      url: {url}",
        "      security: sign_and_encrypt",
        "      security_policy: Basic256Sha256",
        f"      certificate: {der}",
        f"      private_key: {key}",
        f"      server_certificate: {server}   # optional: pins the server's certificate",
        "",
        "Trust the certificate on the server: copy the .der (or .pem) into the server's trusted",
        "certificates, or, after Laterne's first attempt, move it from the server's rejected",
        "certificates to the trusted ones (compare the SHA-1 above). Until then the device is",
        'FAULTY: "the server refused our client certificate".',
        "",
        "The server's certificate, for server_certificate:",
        f"    laterne browse {url} --save-server-certificate {server}",
        "writes the one it offers; compare its SHA-1 with what the server shows for itself.",
        "Without server_certificate, Laterne takes the certificate the server offers at each",
        "connect (trust on first use).",
    ]
    typer.echo("\n".join(lines))


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    """Write ``data`` to ``path``; a secret is created 0600 and stays 0600 (umask or not)."""
    mode = 0o600 if secret else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)
        f.write(data)

"""OPC-UA security settings of one endpoint, applied to a fresh asyncua ``Client`` at connect time.

Rule: credentials live in the environment, never in the YAML and never in a log line. The
variables named by ``username_env``/``password_env`` are read on every connect (a rotated
password is picked up at the next reconnect); an unset variable is a
:class:`~laterne.drivers.field.errors.MissingCredential` naming it, raised before any byte is sent.
asyncua logs every request it sends at DEBUG, the ActivateSession request with its password
included (in clear text when the channel has no security); a filter on that logger redacts the
user identity token before any handler sees it.

Certificates are read from the files the site names (the loader made the paths absolute and
checked they exist): our certificate in PEM or DER, its private key in PEM or DER, and
optionally the server's certificate. Without the server's certificate asyncua asks the server
for its endpoints over an unsecured channel and takes the certificate of the endpoint that
matches policy and mode (trust on first use); naming it in the site pins it. Our application
URI is taken from our certificate's subjectAltName, as servers compare the two.

:func:`make_client_certificate` makes the certificate and key (``laterne opcua-cert``): a
self-signed X.509 v3 application instance certificate as OPC 10000-6 (6.2.2) asks for a client
under Basic256Sha256: RSA 2048 with a SHA-256 signature; subjectAltName with the application
URI (``urn:<host>:<name>``, which :func:`apply_security` then announces, so the two agree by
construction) and the host's DNS name or IP address; key usage digitalSignature,
nonRepudiation, keyEncipherment, dataEncipherment and keyCertSign (it signs itself); extended key
usage clientAuth; basicConstraints cA=false. It is pure apart from drawing the key: writing the
files is the caller's.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from laterne.models.site import OpcUaEndpoint

from .errors import MissingCredential, SetupError

__all__ = [
    "ClientCertificate",
    "application_uri",
    "apply_credentials",
    "apply_security",
    "load_certificate_der",
    "load_private_key_pem",
    "make_client_certificate",
]

#: the asyncua logger that logs every request sent, ActivateSession (and its password) included
_REQUEST_LOGGER = "asyncua.client.ua_client.UASocketProtocol"

_MODES: dict[str, ua.MessageSecurityMode] = {
    "sign": ua.MessageSecurityMode.Sign,
    "sign_and_encrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
}


def apply_credentials(
    client: Client,
    endpoint: OpcUaEndpoint,
    context: str,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Set user name and password from the environment variables the endpoint names.

    Raises
    ------
    MissingCredential
        a named variable is not set (an empty value counts as set: some servers allow it).
    """
    if endpoint.username_env is None or endpoint.password_env is None:
        return
    user = environ.get(endpoint.username_env)
    if user is None:
        raise MissingCredential(endpoint.username_env, "OPC-UA user name", context)
    password = environ.get(endpoint.password_env)
    if password is None:
        raise MissingCredential(endpoint.password_env, "OPC-UA password", context)
    _install_redaction()
    client.set_user(user)
    client.set_password(password)


class _RedactIdentityToken(logging.Filter):
    """Replace a logged request that carries a user identity token by a note saying so."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "IdentityToken" in record.getMessage():
            record.msg = "Sending: ActivateSessionRequest (user identity token redacted)"
            record.args = ()
        return True


_REDACTION = _RedactIdentityToken()


def _install_redaction() -> None:
    logger = logging.getLogger(_REQUEST_LOGGER)
    if _REDACTION not in logger.filters:
        logger.addFilter(_REDACTION)


def load_certificate_der(path: str, context: str) -> tuple[bytes, str | None]:
    """The DER bytes of the certificate in ``path`` (PEM or DER) and its application URI.

    Raises
    ------
    SetupError
        the file cannot be read or holds no certificate.
    """
    data = _read(path, "certificate", context)
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data)
        )
    except ValueError as exc:
        raise SetupError(f"{context}: {path} holds no X.509 certificate: {exc}") from exc
    uri: str | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        uri = uris[0] if uris else None
    return cert.public_bytes(serialization.Encoding.DER), uri


def load_private_key_pem(path: str, context: str) -> bytes:
    """The private key in ``path`` (PEM or DER, unencrypted) as PKCS#8 PEM bytes.

    Raises
    ------
    SetupError
        the file cannot be read, holds no key, or the key is encrypted.
    """
    data = _read(path, "private key", context)
    key: PrivateKeyTypes
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: encrypted, and no password given
        raise SetupError(f"{context}: {path} holds no usable private key: {exc}") from exc
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


async def apply_security(client: Client, endpoint: OpcUaEndpoint, context: str) -> None:
    """Configure policy, mode and certificates on ``client`` (nothing for ``security: none``).

    Without ``server_certificate`` this makes one unsecured GetEndpoints round trip; run it
    under the connect timeout and the exception mapping. A server that offers no endpoint with
    the wanted policy and mode raises asyncua's ``UaError`` (the caller maps it).

    Raises
    ------
    SetupError
        a certificate or key file is unreadable or malformed.
    """
    if endpoint.security == "none":
        return
    assert endpoint.certificate is not None and endpoint.private_key is not None  # the schema
    cert_der, app_uri = load_certificate_der(endpoint.certificate, context)
    key_pem = load_private_key_pem(endpoint.private_key, context)
    server_cert: uacrypto.CertProperties | None = None
    if endpoint.server_certificate is not None:
        server_der, _uri = load_certificate_der(endpoint.server_certificate, context)
        server_cert = uacrypto.CertProperties(server_der, extension="der")
    if app_uri is not None:
        client.application_uri = app_uri
    await client.set_security(
        _POLICIES[endpoint.security_policy],
        uacrypto.CertProperties(cert_der, extension="der"),
        uacrypto.CertProperties(key_pem, extension="pem"),
        server_certificate=server_cert,
        mode=_MODES[endpoint.security],
    )


def _read(path: str, what: str, context: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SetupError(f"{context}: cannot read {what} {path}: {exc.strerror or exc}") from exc


# ------------------------------------------------------------------- making a certificate

#: RSA key size for Basic256Sha256 (the policy allows 2048 to 4096 bits) [bit]
_KEY_BITS = 2048
#: a certificate starts being valid this long before it was made, for clocks a little behind
_BACKDATE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client certificate (DER and PEM), its unencrypted private key (PKCS#8 PEM), and the
    application URI in its subjectAltName."""

    certificate_der: bytes
    certificate_pem: bytes
    private_key_pem: bytes
    application_uri: str
    thumbprint: str  # SHA-1 of the DER, "ab:cd:...", as servers list trusted certificates


def application_uri(name: str, host: str) -> str:
    """The application URI Laterne's certificates carry: ``urn:<host>:<name>``."""
    return f"urn:{host}:{name}"


def make_client_certificate(
    name: str, host: str, days: int, *, now: datetime | None = None
) -> ClientCertificate:
    """A fresh key and a self-signed client certificate for it, valid ``days`` days.

    Raises
    ------
    ValueError
        an empty ``name`` or ``host``, or ``days`` below 1.
    """
    if not name or not host:
        raise ValueError("the certificate needs a name and a host")
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    now = now if now is not None else datetime.now(UTC)
    uri = application_uri(name, host)
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Laterne"),
        ]
    )
    host_name: x509.GeneralName
    try:
        host_name = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        host_name = x509.DNSName(host)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), host_name]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,  # nonRepudiation
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,  # it signs itself
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    digest = cert.fingerprint(hashes.SHA1())  # how OPC-UA tools name certificates
    return ClientCertificate(
        certificate_der=der,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        application_uri=uri,
        thumbprint=":".join(f"{b:02x}" for b in digest),
    )

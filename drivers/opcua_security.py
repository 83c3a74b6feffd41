"""OPC-UA security settings of one endpoint, applied to a fresh asyncua ``Client`` at connect time.

Rule: credentials live in the environment, never in the YAML and never in a log line. The
variables named by ``username_env``/``password_env`` are read on every connect (a rotated
password is picked up at the next reconnect); an unset variable is a
:class:`~laterne.drivers.errors.MissingCredential` naming it, raised before any byte is sent.
asyncua logs every request it sends at DEBUG, the ActivateSession request with its password
included (in clear text when the channel has no security); a filter on that logger redacts the
user identity token before any handler sees it.

Certificates are read from the files the site names (the loader made the paths absolute and
checked they exist): our certificate in PEM or DER, its private key in PEM or DER, and
optionally the server's certificate. Without the server's certificate asyncua asks the server
for its endpoints over an unsecured channel and takes the certificate of the endpoint that
matches policy and mode (trust on first use); naming it in the site pins it. Our application
URI is taken from our certificate's subjectAltName, as servers compare the two.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from laterne.models.site import OpcUaEndpoint

from .errors import MissingCredential, SetupError

__all__ = ["apply_credentials", "apply_security", "load_certificate_der", "load_private_key_pem"]

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

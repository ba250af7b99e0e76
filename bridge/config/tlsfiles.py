"""TLS material for `mqtts://`: the CA, client certificate and key files, loaded into an
`SSLContext`. The config validates with the same functions the link connects with, so a file
that `check-config` accepts is one `run` can load (docs/configuration.md, "TLS").

No MQTT library here: `bridge.config` imports this module.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsFileError(ValueError):
    """A TLS file cannot be read or is not what it should be; the message says which and why."""


def read_pem(path: Path, what: str) -> str:
    """The text of a PEM file, or a `TlsFileError` saying plainly why it cannot be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise TlsFileError(f"file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise TlsFileError(f"{path} is a directory, not a {what} file") from exc
    except OSError as exc:
        raise TlsFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    text = data.decode("ascii", "replace")
    if "-----BEGIN " not in text:
        raise TlsFileError(f"{path} is not a PEM file (no -----BEGIN line); expected a {what}")
    return text


def check_ca(path: Path) -> None:
    """The file holds at least one PEM CA certificate an `SSLContext` accepts."""
    text = read_pem(path, "CA certificate")
    try:
        ssl.create_default_context(cadata=text)
    except ssl.SSLError as exc:
        raise TlsFileError(f"{path} holds no usable PEM CA certificate{_reason(exc)}") from exc


def check_cert(path: Path) -> None:
    """The file holds a PEM certificate (its key is checked with `check_key_pair`)."""
    text = read_pem(path, "client certificate")
    try:  # parses every certificate of the file (a key block in it is skipped)
        ssl.create_default_context(cadata=text)
    except ssl.SSLError as exc:
        raise TlsFileError(f"{path} holds no usable PEM certificate{_reason(exc)}") from exc


def check_key_pair(cert: Path, key: Path | None) -> None:
    """The client certificate and its key (from `key`, else from the certificate file) load."""
    if key is not None:
        read_pem(key, "private key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    except ssl.SSLError as exc:
        where = f"{key}" if key is not None else f"{cert} (no mqtt.tls_key_file is set)"
        raise TlsFileError(
            f"{where} holds no PEM private key matching the certificate{_reason(exc)}"
        ) from exc
    except OSError as exc:
        raise TlsFileError(f"cannot load the client certificate: {exc.strerror or exc}") from exc


def client_context(
    *, ca_file: Path | None, cert_file: Path | None, key_file: Path | None, insecure: bool
) -> ssl.SSLContext:
    """The client `SSLContext`: the CA (else the system's), the client certificate if any;
    `insecure` skips verification of the server."""
    cadata = read_pem(ca_file, "CA certificate") if ca_file is not None else None
    ctx = ssl.create_default_context(cadata=cadata)
    if cert_file is not None:
        check_cert(cert_file)
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _reason(exc: ssl.SSLError) -> str:
    """ " (no certificate or crl found)" from OpenSSL's reason code, when it gives one."""
    reason = exc.reason if isinstance(exc.reason, str) else ""
    return f" ({reason.lower().replace('_', ' ')})" if reason and reason != "PEM_LIB" else ""

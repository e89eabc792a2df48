"""TLS for the gRPC port and the REST gateway, from one certificate and key.

The files are read once at start, so a missing or unreadable file stops the start with
one line instead of failing the first handshake. The same pair serves both ports. The
gateway reaches the gRPC server over a private Unix socket (see `PrivateSocket`) rather
than over TLS to itself: the certificate may name a public host that 127.0.0.1 is not,
and a hop inside one process gains nothing from encryption.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["PrivateSocket", "TlsError", "TlsFiles"]

_PEM_MARKER = b"-----BEGIN "


class TlsError(OSError):
    """A certificate or key file cannot be used; the message says which and why."""


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate chain and its private key, both read into memory."""

    cert_path: Path
    key_path: Path
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def read(cls, cert_path: Path, key_path: Path) -> TlsFiles:
        """Reads both files and checks that the key belongs to the certificate; TlsError
        with a sentence if they cannot be used (gRPC's own message would only say that
        the port could not be bound)."""
        files = cls(
            cert_path, key_path, _read_pem(cert_path, "certificate"), _read_pem(key_path, "key")
        )
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                cert_path, key_path, password=_no_passphrase(key_path)
            )
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            raise TlsError(
                f"TLS certificate {cert_path} and key {key_path} cannot be used together "
                f"({reason.lower().replace('_', ' ')})"
            ) from None
        return files

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)])


def _no_passphrase(key_path: Path) -> Callable[[], str]:
    """Refuses an encrypted key with a sentence: gRPC cannot use one, and without a
    callback OpenSSL would stop the start to ask for a passphrase on the terminal."""

    def refuse() -> str:
        raise TlsError(f"TLS key {key_path} is encrypted; give an unencrypted key")

    return refuse


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"TLS {what} {path} cannot be read: {exc.strerror or exc}") from None
    if _PEM_MARKER not in data:
        raise TlsError(f"TLS {what} {path} is not a PEM file")
    return data


class PrivateSocket:
    """A Unix socket path in a fresh directory only this user can enter (mode 0700).

    Short on purpose: socket paths are limited to about 107 bytes, and a data dir
    may be deeper than that. Token auth still applies to calls that arrive on it."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="tandem-"))
        self.path = self._dir / "grpc.sock"

    @property
    def target(self) -> str:
        """The gRPC address of the socket: `unix:/tmp/tandem-xxxx/grpc.sock`."""
        return f"unix:{self.path}"

    def remove(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

"""TLS: `tandem serve --tls-cert --tls-key` speaks TLS on gRPC and REST, the gateway still
reaches the gRPC server, plain-text callers are refused, and bad files stop the start."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import tandem
from tandem import Client
from tandem.v1 import resource_service_pb2, resource_service_pb2_grpc
from tests.harness.served import ServedProcess

TANDEM = str(Path(sys.executable).parent / "tandem")
TOKEN = "tls-test-token"


def write_self_signed(
    folder: Path, name: str = "cert", passphrase: bytes | None = None
) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def serve_command(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *(TANDEM, "serve", "--grpc-port", "0", "--http-port", "0", "--prewarm-workers", "0"),
        *("--data-dir", str(tmp_path / "data"), *extra),
    ]


@dataclass
class TlsServer:
    served: ServedProcess
    cert: Path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    cert, key = write_self_signed(tmp_path)
    served = ServedProcess(
        tmp_path / "data",
        *("--prewarm-workers", "0", "--tls-cert", str(cert), "--tls-key", str(key)),
        env={"TANDEM_AUTH_TOKEN": TOKEN},
    )
    yield TlsServer(served, cert)
    served.stop()  # a clean stop, so the gateway's socket folder goes too


def test_grpc_and_rest_speak_tls_and_refuse_plain_text(tls_server: TlsServer) -> None:
    with Client(tls_server.served.grpc_address, TOKEN, ca_cert=tls_server.cert) as client:
        assert "cpu" in client.resources().device_usage
        with pytest.raises(tandem.NotFound):
            client.get_task("no-such-task")

    with grpc.insecure_channel(tls_server.served.grpc_address) as plain:
        stub = resource_service_pb2_grpc.ResourceServiceStub(plain)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetResources(resource_service_pb2.GetResourcesRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    assert tls_server.served.rest_url.startswith("https://")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # A REST answer proves the gateway reaches the gRPC server over its private socket.
    reply = requests.get(
        f"{tls_server.served.rest_url}/api/v2/resources",
        headers=auth,
        verify=tls_server.cert,
        timeout=30,
    )
    assert reply.status_code == 200 and "device_usage" in reply.json()
    listed = requests.get(
        f"{tls_server.served.rest_url}/api/v2/tasks",
        headers=auth,
        verify=tls_server.cert,
        timeout=30,
    )
    assert listed.status_code == 200 and listed.json()["total_training"] == 0
    with pytest.raises(requests.exceptions.ConnectionError):
        plain_url = tls_server.served.rest_url.replace("https://", "http://")
        requests.get(f"{plain_url}/api/v1/health", timeout=10)

    assert tls_server.served.stop()[0] == 0  # SIGTERM


def test_the_cli_talks_tls_with_a_ca_file(tls_server: TlsServer) -> None:
    result = subprocess.run(
        [TANDEM, "--address", tls_server.served.grpc_address, "--json", "resources"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TANDEM_AUTH_TOKEN": TOKEN, "TANDEM_CA_CERT": str(tls_server.cert)},
    )
    assert result.returncode == 0, result.stderr
    assert "device_usage" in result.stdout


def test_a_certificate_without_its_key_is_a_usage_error(tmp_path: Path) -> None:
    cert, _ = write_self_signed(tmp_path)
    result = subprocess.run(
        serve_command(tmp_path, "--tls-cert", str(cert)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--tls-key" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "problem", ["missing file", "not PEM", "key of another certificate", "encrypted key"]
)
def test_unusable_tls_files_stop_the_start_with_one_line(tmp_path: Path, problem: str) -> None:
    cert, key = write_self_signed(tmp_path)
    if problem == "missing file":
        key = tmp_path / "absent.key"
    elif problem == "not PEM":
        key.write_text("hello")
    elif problem == "encrypted key":
        cert, key = write_self_signed(tmp_path, "locked", passphrase=b"secret")
    else:
        _, key = write_self_signed(tmp_path, "other")
    result = subprocess.run(
        serve_command(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,  # nothing may stop the start to ask for a passphrase
    )
    assert result.returncode == 1, result.stderr
    assert "tandem: cannot start:" in result.stderr
    assert "Traceback" not in result.stderr

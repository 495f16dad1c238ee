"""The `flwr run` path over TLS: a SuperLink with certificates this test generates on loopback serves
the run (deploy/README.md, "Trust and TLS"); a client without the CA, or in plaintext, is refused."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedsim import snapshots

from processes import free_port, stop_group

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, valid for a day."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsim test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.crt", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _serving_tls(port: int, ca: Path, timeout: float = 60) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1"):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no TLS SuperLink on port {port}")


@pytest.mark.slow
@pytest.mark.skipif(not (BIN / "flower-superlink").exists(), reason="flwr's flower-superlink is not installed")
def test_flwr_run_over_tls_with_generated_certificates(tmp_path: Path, tiny_manifest: Path, fedsim_home: Path):
    ca, cert, key = _certificates(tmp_path)
    port, home = free_port(), tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "tls"\n\n[superlink.tls]\naddress = "127.0.0.1:{port}"\nroot-certificates = "{ca}"\n\n'
        f'[superlink.plain]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_HOME": str(home), "FEDSIM_HOME": str(fedsim_home), "RAY_ADDRESS": "local",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # the SuperLink starts flower-superexec by name
    superlink = subprocess.Popen(
        [str(BIN / "flower-superlink"), "--simulation", "--disable-runtime-dependency-installation",
         "--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
         "--host", "127.0.0.1", "--port", str(port), "--database", str(home / "state.db")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _serving_tls(port, ca)
        run = tmp_path / "run"
        prepared = subprocess.run([sys.executable, "-m", "fedsim.run", "--env", "tiny", "--cohort", str(tiny_manifest),
                                   "--out", str(run), "--rounds", "1", "--prepare-only"], env=env, capture_output=True, text=True, timeout=120)
        assert prepared.returncode == 0, prepared.stderr
        flwr = [str(BIN / "flwr"), "run", ".", "tls", "--stream", "--run-config", f"run-dir='{run}'",
                "--federation-config", "num-supernodes=3 client-resources-num-cpus=1"]
        result = subprocess.run(flwr, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert snapshots.is_done(run) and snapshots.complete_rounds(run) == [0, 1]
        plain = subprocess.run([*flwr[:3], "plain", *flwr[4:]], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=120)
        assert plain.returncode != 0  # the SuperLink speaks TLS only: a plaintext client gets nowhere
    finally:
        stop_group(superlink, timeout=20)

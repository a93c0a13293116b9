"""TLS to the centre: ``sslmode=verify-full`` against a CA the test makes, on a real server.

The server (tests/pg.py) accepts TCP only over TLS with a password; the CA
and the server's certificate are made here with ``cryptography``. verify-full
must accept the right CA and host name, and refuse another CA or another name
with one line.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.pg import SUPERUSER, PgServer

from .test_cli import edge, make_site, one_line


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(folder: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = folder / f"{cn}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def _server_cert(folder: Path, ca_key, ca_cert) -> tuple[Path, Path]:
    """A certificate for the name "localhost" only (not 127.0.0.1), signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    crt, pem = folder / "server.crt", folder / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    return crt, pem


def test_verify_full_accepts_the_right_ca_and_name_only(tmp_path: Path):
    ca_key, ca_cert, ca = _ca(tmp_path, "fleet-ca")
    _, _, other_ca = _ca(tmp_path, "other-ca")
    server = PgServer(ssl=_server_cert(tmp_path, ca_key, ca_cert))
    try:
        db = server.new_database()
        pw = tmp_path / "fleet-password"
        pw.write_text(server.password + "\n")
        pw.chmod(0o600)
        (tmp_path / "site").mkdir()
        site = make_site(tmp_path / "site", **{
            "key_file: data/fleet.key": f"key_file: {tmp_path / 'fleet.key'}",
            "  password_file: null    # mode 0600": f"  password_file: {pw}    # mode 0600",
            "  sslmode: null ": "  sslmode: verify-full ",
            "  sslrootcert: null ": f"  sslrootcert: {ca} ",
        })
        url = f"postgresql://{SUPERUSER}@localhost:{server.port}/{db}"
        r = edge("fleet", "init", "--fleet", url, "--config", site.config)
        assert r.exit_code == 0, r.output
        r = edge("list", "--fleet", url, *site.opts())
        assert r.exit_code == 0 and r.stdout == "nobody enrolled\n", r.output
        # The URL's own parameters work too, and win over the config's.
        r = edge("list", "--fleet", f"{url}?sslrootcert={other_ca}", *site.opts())
        one_line(r, 1, "cannot connect", "certificate verify failed")
        # The certificate names localhost, not 127.0.0.1: verify-full refuses the address.
        by_ip = f"postgresql://{SUPERUSER}@127.0.0.1:{server.port}/{db}"
        one_line(edge("list", "--fleet", by_ip, *site.opts()), 1, "cannot connect",
                 "does not match host name")
    finally:
        server.close()

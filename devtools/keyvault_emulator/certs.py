"""A fresh self-signed TLS certificate for each emulator start.

The certificate is its own CA (basicConstraints CA:TRUE, keyCertSign): OpenSSL only accepts a PEM given as
a trust anchor (``connection_verify=<pem>``, ``REQUESTS_CA_BUNDLE``, ``ssl.create_default_context(cafile=)``)
when it is a CA certificate. It names localhost, 127.0.0.1 and ::1 (plus the bound host when that is
another loopback address). The private key never touches the disk except for the moment ``ssl`` needs to
load it from a file, in a private temporary directory.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
PKCS12 = "application/x-pkcs12"
PEM = "application/x-pem-file"


def generate_certificate(extra_hosts: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a new self-signed ECDSA P-256 CA/server certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    public_key = key.public_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Key Vault emulator (development only)"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    for host in extra_hosts:
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding the certificate and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="kv-emulator-") as tmp:
        cert_path = Path(tmp) / "cert.pem"
        key_path = Path(tmp) / "key.pem"
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


def write_certificate(path: Path, cert_pem: bytes) -> None:
    """Write the PEM atomically, so a reader never sees half a certificate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(cert_pem)
    tmp.replace(path)


def certificate_secret(
    name: str, content_type: str, now: datetime.datetime | None = None
) -> tuple[str, int, int]:
    """(value, nbf, exp) of the secret behind a new self-signed certificate ``CN=name``, as Key Vault stores
    it: base64 PKCS#12 without a password, or PEM (the PKCS#8 private key, then the certificate). Valid
    from ``now`` (default: the current time; the emulator passes its shifted clock)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])  # a CN has at most 64
    now = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .sign(key, hashes.SHA256())
    )
    if content_type == PKCS12:
        pfx = pkcs12.serialize_key_and_certificates(
            name.encode(), key, certificate, None, serialization.NoEncryption()
        )
        value = base64.b64encode(pfx).decode()
    elif content_type == PEM:
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        value = (key_pem + certificate.public_bytes(serialization.Encoding.PEM)).decode()
    else:
        raise ValueError(f"content type must be {PKCS12} or {PEM}")
    return value, int(now.timestamp()), int((now + VALIDITY).timestamp())

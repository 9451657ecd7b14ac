"""A throwaway certificate authority for local and docker-compose clusters.

`strom cluster up --tls` and `strom certs create` call `write_cluster_certs`, which writes PEM
files under one directory:

    DIR/ca.crt                  the CA certificate (every node and client trusts it)
    DIR/ca.key                  its private key (kept so more certificates can be issued)
    DIR/<name>.crt, <name>.key  one certificate and key per node and per client
    DIR/<name>.properties       client settings for `--command-config` with that identity
                                (file names relative to DIR, so it works wherever DIR is mounted)
    DIR/client.properties       the same for the first client identity

Node certificates carry both the serverAuth and the clientAuth extended key usage: a node
presents the same certificate to clients and, as a client, to the other nodes (mutual TLS
between nodes), as Kafka brokers do with one keystore. gRPC checks the server's name against
the certificate's subject alternative names, so every host name and IP address a peer or client
dials must be listed (localhost and 127.0.0.1 are always added). The subject's common name is
the principal an authorizer sees (`User:<CN>`).

Keys are ECDSA P-256: small, and fast to generate and to handshake with. Private keys are written
with mode 0600 and never logged. These certificates are for trying TLS out: they live for
`days_valid` days and the CA key sits beside them; production clusters bring their own PKI.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAYS_VALID = 365
ALWAYS_HOSTS = ("localhost", "127.0.0.1", "::1")
CLIENT_PROPERTIES = "client.properties"


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where one identity's PEM files are."""

    ca: Path
    certificate: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "strom"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(days_valid: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    # Back-dated a little: a peer whose clock is slightly behind must not see "not yet valid".
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days_valid)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def create_authority(
    common_name: str = "strom-local-ca", days_valid: int = DAYS_VALID
) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days_valid)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, certificate)


def _subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *ALWAYS_HOSTS]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue(
    authority: Authority,
    common_name: str,
    hosts: Sequence[str] = (),
    *,
    server: bool = True,
    days_valid: int = DAYS_VALID,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate signed by `authority` for `common_name`, valid for `hosts` (plus localhost).
    `server=False` issues a client-only certificate (clientAuth, no serverAuth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days_valid)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(_subject_alt_names(hosts)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return key, certificate


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_authority(directory: Path, authority: Authority) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(_cert_pem(authority.certificate))
    _write_private(directory / "ca.key", _key_pem(authority.key))


def load_authority(directory: Path) -> Authority:
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), "strom CAs use EC keys"
    certificate = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    return Authority(key, certificate)


def write_identity(
    directory: Path,
    authority: Authority,
    name: str,
    hosts: Sequence[str] = (),
    *,
    server: bool = True,
) -> CertFiles:
    """Issue a certificate for `name` (also its CN) and write `name.crt` and `name.key`."""
    key, certificate = issue(authority, name, hosts, server=server)
    files = CertFiles(directory / "ca.crt", directory / f"{name}.crt", directory / f"{name}.key")
    files.certificate.write_bytes(_cert_pem(certificate))
    _write_private(files.key, _key_pem(key))
    return files


def write_properties(files: CertFiles, path: Path) -> None:
    """A client properties file (strom.client.properties) that connects with `files`."""

    def name(file: Path) -> str:
        return file.name if file.parent == path.parent else str(file)

    path.write_text(
        "# strom client settings: strom <command> --command-config THIS-FILE\n"
        "security.protocol=SSL\n"
        f"ssl.ca.location={name(files.ca)}\n"
        f"ssl.certificate.location={name(files.certificate)}\n"
        f"ssl.key.location={name(files.key)}\n"
    )


def write_cluster_certs(
    directory: Path,
    nodes: Mapping[str, Sequence[str]],
    clients: Sequence[str] = ("strom-admin",),
) -> dict[str, CertFiles]:
    """A new CA in `directory`, a certificate per node (name -> the hosts it is reached by) and a
    client-only certificate per client name; returns name -> files."""
    directory = Path(directory)
    authority = create_authority()
    write_authority(directory, authority)
    files = {
        name: write_identity(directory, authority, name, hosts) for name, hosts in nodes.items()
    }
    for name in clients:
        files[name] = write_identity(directory, authority, name, server=False)
    for name, identity in files.items():
        write_properties(identity, directory / f"{name}.properties")
    if clients:
        write_properties(files[clients[0]], directory / CLIENT_PROPERTIES)
    return files

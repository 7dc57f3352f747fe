"""Certificates and SuperNode keys for a deployment (``fedsilo deploy certs``).

Layout written under ``DIR``::

    ca/ca.key, ca/ca.pem            the study's certificate authority (keep ca.key offline)
    superlink/server.key, .pem      the SuperLink's TLS certificate (SANs: the given hosts)
    superlink/ca.pem                copy of the CA certificate
    sites/<name>/auth.key, .pub     the site's SuperNode authentication key pair (EC P-384,
                                    OpenSSH format, as ``flower-supernode`` and
                                    ``flwr supernode register`` read them)
    sites/<name>/ca.pem             the CA certificate the site verifies the SuperLink with
    sites/<name>/site.toml          the site's name and index (its position in ``--sites``)
    public-keys.csv                 site,index,public key: the keys the SuperLink registers

Private keys are written with permissions 0600 and never overwritten: an existing key makes
the command fail before anything is written.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomllib
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
PUBLIC_KEYS = "public-keys.csv"


class DeployError(ValueError):
    """A deployment input is wrong (certificates, keys, site names, addresses); the message names it."""


@dataclass(frozen=True)
class SiteBundle:
    """What a site's SuperNode needs: its name, index, auth key and the CA certificate."""

    name: str
    index: int
    private_key: Path
    public_key: Path
    ca_cert: Path


def _check_sites(sites: Sequence[str]) -> list[str]:
    names = [s.strip() for s in sites if s.strip()]
    if not names:
        raise DeployError("--sites must name at least one site, e.g. --sites a,b,c, got none")
    for name in names:
        if not SITE_NAME.match(name):
            raise DeployError(f"site name must be letters, digits, '.', '_' or '-' (at most 63), got {name!r}")
    if len(set(names)) != len(names):
        raise DeployError(f"site names must be unique, got {names}")
    return names


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip() for h in hosts if h.strip()):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not re.match(r"^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$", host):
                raise DeployError(f"--hosts entries must be host names or IP addresses, got {host!r}") from None
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o644)


def issue_certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    *,
    hosts: Sequence[str] = (),
    not_before: _dt.datetime | None = None,
    days: int = 825,
) -> x509.Certificate:
    """An X.509 certificate for ``key`` signed by ``issuer_key`` (self-signed CA when ``issuer`` is None).

    ``not_before``/``days`` set the validity window (tests make expired certificates with them).
    """
    start = not_before or _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _dt.timedelta(days=days))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_san(hosts), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(issuer_key, hashes.SHA384())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certs(
    out: str | Path,
    sites: Sequence[str],
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    days: int = 825,
) -> list[SiteBundle]:
    """Write a CA, the SuperLink certificate and one authentication key pair per site.

    Parameters
    ----------
    out
        Folder to write into (created if missing). Existing keys are never overwritten: if any
        file this would write exists, nothing is written and :class:`DeployError` names it.
    sites
        Site names in the order that gives their index (the order of ``--sites``).
    hosts
        Host names / IP addresses the SuperLink is reached by (certificate SANs).
    days
        Validity of the certificates.
    """
    names = _check_sites(sites)
    if days < 1:
        raise DeployError(f"days must be >= 1, got {days}")
    root = Path(out)
    planned = [root / "ca" / "ca.key", root / "superlink" / "server.key", root / PUBLIC_KEYS,
               *[root / "sites" / n / "auth.key" for n in names]]
    existing = [str(p) for p in planned if p.exists()]
    if existing:
        raise DeployError(f"refusing to overwrite existing keys: {', '.join(existing)} "
                          f"(choose a new --out, or remove them yourself)")
    san = _san(list(hosts) or list(DEFAULT_HOSTS))
    for sub in ("ca", "superlink", "sites"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "ca").chmod(0o700)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = issue_certificate("fedsilo study CA", ca_key, ca_key, None, days=days)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    _write_private(root / "ca" / "ca.key", _pem_key(ca_key))
    _write_public(root / "ca" / "ca.pem", ca_pem)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_hosts = [str(getattr(g, "value", g)) for g in san]
    server = issue_certificate("fedsilo superlink", server_key, ca_key, ca, hosts=server_hosts, days=days)
    _write_private(root / "superlink" / "server.key", _pem_key(server_key))
    _write_public(root / "superlink" / "server.pem", server.public_bytes(serialization.Encoding.PEM))
    _write_public(root / "superlink" / "ca.pem", ca_pem)
    bundles, lines = [], ["site,index,public_key"]
    for index, name in enumerate(names):
        folder = root / "sites" / name
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP384R1())
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write_private(folder / "auth.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        _write_public(folder / "auth.pub", pub + b"\n")
        _write_public(folder / "ca.pem", ca_pem)
        _write_public(folder / "site.toml", f'name = "{name}"\nindex = {index}\n'.encode())
        lines.append(f"{name},{index},{pub.decode()}")
        bundles.append(SiteBundle(name, index, folder / "auth.key", folder / "auth.pub", folder / "ca.pem"))
    _write_public(root / PUBLIC_KEYS, ("\n".join(lines) + "\n").encode())
    logger.info("Wrote CA, SuperLink certificate (%s) and keys for %d site(s) to %s",
                ", ".join(server_hosts), len(names), root)
    return bundles


def read_site_bundle(certs: str | Path, site: str) -> SiteBundle:
    """The files a site's SuperNode needs, from a ``deploy certs`` folder (or a site's own copy).

    ``certs`` may be the whole ``deploy certs`` folder or just the site's folder
    (``sites/<name>``, which is what a hospital receives).
    """
    root = Path(certs)
    folder = root / "sites" / site if (root / "sites").is_dir() else root
    meta = folder / "site.toml"
    if not meta.is_file():
        raise DeployError(f"{meta}: no such file; --certs must be a `fedsilo deploy certs` folder or a site's "
                          f"folder from it, and --site one of its sites")
    try:
        info = tomllib.loads(meta.read_text(encoding="utf-8"))
        name, index = str(info["name"]), int(info["index"])
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise DeployError(f"{meta}: not a site description (name, index): {exc}") from None
    if name != site:
        raise DeployError(f"{meta} belongs to site {name!r}, not --site {site!r}")
    bundle = SiteBundle(name, index, folder / "auth.key", folder / "auth.pub", folder / "ca.pem")
    for path in (bundle.private_key, bundle.ca_cert):
        if not path.is_file():
            raise DeployError(f"{path}: missing from the site's certificate folder")
    return bundle

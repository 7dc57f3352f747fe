"""Pre-flight checks of deployment inputs: addresses, certificates, keys, the TLS handshake.

Flower reports a bad certificate as a retry loop or a gRPC/HTTP stack trace far from its cause;
these checks run first and raise :class:`~fedsilo.deploy.certs.DeployError` naming the file or
address and what is wrong with it.
"""

from __future__ import annotations

import datetime as _dt
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedsilo.deploy.certs import DeployError

_HANDED_OUT: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now and that this process has not handed out before.

    Binding port 0 and closing the socket lets the kernel give the same port to the next call
    (seen: two SuperNodes of one loopback deployment got one port, and one failed to start), so
    ports already returned are skipped. A port can still be taken by another process between this
    call and its use; callers start one server per port and check that it started.
    """
    for _ in range(1000):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if (host, port) not in _HANDED_OUT:
            _HANDED_OUT.add((host, port))
            return port
    raise DeployError(f"no free TCP port on {host} that was not handed out already (1000 tries)")


def parse_address(address: str, what: str = "--superlink") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port)."""
    text = address.strip()
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeployError(f"{what} must be HOST:PORT with a port in 1..65535, got {address!r}")
    return host, int(port)


def load_certificate(path: str | Path, what: str) -> x509.Certificate:
    """A PEM certificate, or a DeployError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"{what} {path}: no such file")
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise DeployError(f"{what} {path}: not a PEM certificate ({exc})") from None


def check_validity(cert: x509.Certificate, path: str | Path, what: str,
                   now: _dt.datetime | None = None) -> None:
    """Refuse a certificate outside its validity window."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if now > cert.not_valid_after_utc:
        raise DeployError(f"{what} {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
                          f"issue new certificates with `fedsilo deploy certs`")
    if now < cert.not_valid_before_utc:
        raise DeployError(f"{what} {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
                          f"(check the clock)")


def check_server_files(ca: Path, cert: Path, key: Path, hosts: list[str] | None = None) -> None:
    """The SuperLink's CA, certificate and key: readable, in date, signed by the CA, matching,
    and (when ``hosts`` is given) naming each host in its SANs."""
    ca_cert = load_certificate(ca, "CA certificate")
    check_validity(ca_cert, ca, "CA certificate")
    server = load_certificate(cert, "SuperLink certificate")
    check_validity(server, cert, "SuperLink certificate")
    try:
        server.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception) as exc:  # noqa: BLE001 - InvalidSignature and friends
        raise DeployError(f"SuperLink certificate {cert} was not issued by the CA {ca} ({type(exc).__name__})") from None
    if not key.is_file():
        raise DeployError(f"SuperLink key {key}: no such file")
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), None)
    except (ValueError, TypeError) as exc:
        raise DeployError(f"SuperLink key {key}: not an unencrypted PEM private key ({exc})") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(serialization.Encoding.DER, pub) != \
            server.public_key().public_bytes(serialization.Encoding.DER, pub):
        raise DeployError(f"SuperLink key {key} does not belong to the certificate {cert}")
    if hosts:
        names = set(san_names(server))
        missing = [h for h in hosts if h not in names and h not in ("0.0.0.0", "::")]
        if missing:
            raise DeployError(f"SuperLink certificate {cert} does not name host(s) {', '.join(missing)} "
                              f"(it names {', '.join(sorted(names))}); re-issue it with --hosts")


def san_names(cert: x509.Certificate) -> list[str]:
    """Host names and IP addresses in a certificate's subjectAltName."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + \
        [str(v) for v in ext.get_values_for_type(x509.IPAddress)]


def check_auth_key(path: Path) -> None:
    """A SuperNode authentication key: an unencrypted OpenSSH EC private key, not world-readable."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if not path.is_file():
        raise DeployError(f"SuperNode key {path}: no such file")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, TypeError) as exc:
        raise DeployError(f"SuperNode key {path}: not an unencrypted OpenSSH private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DeployError(f"SuperNode key {path}: must be an EC (NIST curve) key, got {type(key).__name__}")
    if path.stat().st_mode & 0o077:
        raise DeployError(f"SuperNode key {path} is readable by others (mode {path.stat().st_mode & 0o777:o}); "
                          f"run `chmod 600 {path}`")


def tls_handshake(host: str, port: int, ca: Path, timeout: float = 10.0) -> bool:
    """Verify the SuperLink's certificate against ``ca`` for ``host`` by a TLS handshake.

    Returns False when nothing listens yet (the SuperNode will keep retrying); raises
    :class:`DeployError` when the certificate is refused (expired, wrong host, wrong CA).
    """
    load_certificate(ca, "CA certificate")
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=host):
                return True
    except ssl.SSLCertVerificationError as exc:
        raise DeployError(f"the SuperLink at {host}:{port} failed TLS verification with CA {ca}: "
                          f"{exc.verify_message or exc.reason}") from None
    except ssl.SSLError as exc:
        raise DeployError(f"TLS handshake with the SuperLink at {host}:{port} failed: {exc.reason}") from None
    except OSError:
        return False

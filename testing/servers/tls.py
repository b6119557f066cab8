"""Throwaway certificate authorities and server certificates, made with the `openssl` CLI."""

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

from testing.servers.base import ServerUnavailable

# What a client connecting to a test server on loopback checks the certificate against.
LOOPBACK_NAMES: tuple[str, ...] = ("IP:127.0.0.1", "DNS:localhost")

# P-256 keys: generated in milliseconds, and every TLS stack here accepts them.
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_DAYS = "2"


def openssl_missing() -> str | None:
    if shutil.which("openssl") is None:
        return "openssl is not installed (it makes the test certificates)"
    return None


def _openssl(*args: str) -> None:
    if (reason := openssl_missing()) is not None:
        raise ServerUnavailable(reason)
    result = subprocess.run(["openssl", *args], capture_output=True, timeout=30, check=False)
    if result.returncode != 0:
        raise ServerUnavailable(f"openssl {args[0]} failed: {result.stderr.decode()[-500:]}")


@dataclass(frozen=True)
class Certificate:
    """A PEM certificate and its unencrypted private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class CertificateAuthority(Certificate):
    """A self-signed CA that exists only in one directory of the test run."""

    @classmethod
    def create(cls, directory: Path, name: str = "atomic-counter test CA") -> Self:
        """The CA in `directory` (ca.pem, ca.key), made on the first call and reused after."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = cls(cert=directory / "ca.pem", key=directory / "ca.key")
        if not (ca.cert.is_file() and ca.key.is_file()):
            _openssl(
                "req", "-x509", *_KEY,
                "-keyout", str(ca.key), "-out", str(ca.cert),
                "-days", _DAYS, "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-addext", "subjectKeyIdentifier=hash",
            )  # fmt: skip
        return ca

    def issue(self, directory: Path, names: tuple[str, ...] = LOOPBACK_NAMES) -> Certificate:
        """A server certificate signed by this CA for `names` (subjectAltName entries,
        e.g. "IP:127.0.0.1", "DNS:localhost"); made on the first call and reused after."""
        directory.mkdir(parents=True, exist_ok=True)
        issued = Certificate(cert=directory / "server.pem", key=directory / "server.key")
        if issued.cert.is_file() and issued.key.is_file():
            return issued
        request = directory / "server.csr"
        extensions = directory / "server.ext"
        extensions.write_text(
            f"subjectAltName = {', '.join(names)}\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n"
        )
        common_name = names[0].split(":", 1)[1]
        serial = f"0x{secrets.token_hex(8)}"
        _openssl(
            "req", "-new", *_KEY,
            "-keyout", str(issued.key), "-out", str(request), "-subj", f"/CN={common_name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(request),
            "-CA", str(self.cert), "-CAkey", str(self.key), "-set_serial", serial,
            "-days", _DAYS, "-extfile", str(extensions), "-out", str(issued.cert),
        )  # fmt: skip
        return issued


class TlsFiles:
    """Mixin for a server with TLS: a throwaway CA and its server certificate in the
    server's own directory, issued for `certificate_names` (a subclass may give a wrong
    one on purpose)."""

    certificate_names: ClassVar[tuple[str, ...]] = LOOPBACK_NAMES

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)  # type: ignore[call-arg]  # the LocalServer it is mixed into
        self.ca = CertificateAuthority(
            cert=workdir / "ca" / "ca.pem", key=workdir / "ca" / "ca.key"
        )
        self.certificate = Certificate(
            cert=workdir / "server" / "server.pem", key=workdir / "server" / "server.key"
        )

    def missing(self) -> str | None:
        return super().missing() or openssl_missing()  # type: ignore[misc]

    def prepare(self) -> None:
        super().prepare()  # type: ignore[misc]
        CertificateAuthority.create(self.ca.cert.parent).issue(
            self.certificate.cert.parent, self.certificate_names
        )

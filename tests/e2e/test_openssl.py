"""OpenSSL judges what the project issues: every certificate profile, the CRLs, and the OCSP responder.

The portal runs for real (``create_app`` under werkzeug's server on a free loopback port, with
the system clock); the certificates and CRLs are written to files and handed to the ``openssl``
binary, which is the judge here, not our own code.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server

from idp.app import create_app, services
from idp.pki import attributes
from idp.pki.authority import CertificateAuthority
from idp.pki.profiles import (
    ATTESTATION,
    CARD_AUTH,
    CARD_SIGN,
    JLIS_AUTH_CA,
    JLIS_LINKING_SIGNER,
    JLIS_ROOT,
    JLIS_SIGN_CA,
    PROFILES,
    SMARTPHONE_AUTH,
    SMARTPHONE_SIGN,
    VENDOR_ROOT,
    CertificateProfile,
    Issuer,
    KeyAlgorithm,
    attestation_subject,
    build_certificate,
    card_auth_subject,
    card_sign_subject,
    generate_key,
    jlis_name,
)
from idp.pki.records import SqlCertificateRegistry
from idp.pki.service import init_pki
from idp.settings import Settings
from idp.store.database import make_engine, make_session_factory, upgrade

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from flask import Flask

    from idp.pki.service import PortalPki

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")

TARO = attributes.BasicAttributes(
    name="山田　太郎", address="東京都千代田区千代田１－１", date_of_birth=datetime(1990, 5, 15, tzinfo=UTC).date(),
    sex=attributes.Sex.MALE,
)


class _LateApp:
    """A WSGI app that answers once the portal is built: the server's port is part of its issuer."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def __call__(self, environ: dict[str, object], start_response: Callable[..., object]) -> object:
        assert self.app is not None
        return self.app(environ, start_response)


@dataclass(frozen=True, kw_only=True)
class Files:
    """PEM and DER files for openssl, by name."""

    directory: Path

    def pem(self, name: str, certificate: x509.Certificate) -> Path:
        path = self.directory / f"{name}.pem"
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return path

    def bundle(self, name: str, *certificates: x509.Certificate) -> Path:
        path = self.directory / f"{name}.pem"
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
        return path

    def der(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path


@dataclass(frozen=True, kw_only=True)
class World:
    """The running portal, the simulated J-LIS beside it, and an SE vendor."""

    url: str
    portal: PortalPki
    jlis_root: CertificateAuthority
    jlis_auth_ca: CertificateAuthority
    jlis_sign_ca: CertificateAuthority
    card_auth: x509.Certificate
    card_sign: x509.Certificate
    smartphone_auth: x509.Certificate
    smartphone_sign: x509.Certificate
    vendor_root: x509.Certificate
    attestation: x509.Certificate
    linking_signer: x509.Certificate
    files: Files

    def crl_file(self, authority: CertificateAuthority, now: datetime) -> Path:
        crl = authority.build_crl(now=now, lifetime=timedelta(days=1))
        name = f"{authority.name}-{crl_number(crl)}.crl.pem"
        return self.files.der(name, crl.public_bytes(serialization.Encoding.PEM))

    def served_crl(self, name: str) -> Path:
        """The CRL the portal serves for CA ``name``, fetched over HTTP, as a DER file."""
        with urllib.request.urlopen(f"{self.url}/pki/crl/{name}.crl", timeout=10) as response:  # noqa: S310
            assert response.headers["Content-Type"] == "application/pkix-crl"
            return self.files.der(f"served-{name}.crl", response.read())

    def issue_phone(self, profile: CertificateProfile = SMARTPHONE_AUTH) -> x509.Certificate:
        key = generate_key(KeyAlgorithm.EC_P256)
        return self.portal.issue_smartphone_certificate(
            profile=profile,
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"phone {profile.name}")]),
            public_key=key.public_key(),
            card_certificates=[self.card_auth, self.card_sign],
            attributes=TARO if profile.carries_attributes else None,
        )


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    instance = tmp_path_factory.mktemp("instance")
    late = _LateApp()
    server = make_server("127.0.0.1", 0, late, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)

    settings = Settings(issuer=url, instance=instance)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    init_pki(instance, issuer_url=url, now=now)
    late.app = create_app(settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    sessions = make_session_factory(engine)
    jlis_url = "http://jlis.test"

    def authority(name: str, issuer: Issuer, profiles: set[str]) -> CertificateAuthority:
        return CertificateAuthority(
            name=name, issuer=issuer, registry=SqlCertificateRegistry(sessions, name),
            crl_url=f"{jlis_url}/crl/{name}.crl", ocsp_url=f"{jlis_url}/ocsp", profiles=frozenset(profiles),
        )

    root_key = generate_key(KeyAlgorithm.RSA_2048)
    root_certificate = build_certificate(
        profile=JLIS_ROOT, subject=jlis_name("JPKI Root Certification Authority"), public_key=root_key.public_key(),
        issuer=None, signing_key=root_key, not_before=now, not_after=now + timedelta(days=7300),
    )
    jlis_root = authority("jlis-root", Issuer(root_certificate, root_key),
                          {JLIS_AUTH_CA.name, JLIS_SIGN_CA.name, JLIS_LINKING_SIGNER.name})
    linking_signer = jlis_root.issue(
        profile=JLIS_LINKING_SIGNER, subject=jlis_name("JPKI linking data"),
        public_key=generate_key(KeyAlgorithm.RSA_2048).public_key(), now=now, not_after=now + timedelta(days=730),
    )

    def intermediate(profile: CertificateProfile, unit: str, issues: str) -> CertificateAuthority:
        key = generate_key(KeyAlgorithm.RSA_2048)
        certificate = jlis_root.issue(
            profile=profile, subject=jlis_name(unit), public_key=key.public_key(), now=now,
            not_after=now + timedelta(days=3650),
        )
        return authority(profile.name, Issuer(certificate, key), {issues})

    jlis_auth_ca = intermediate(JLIS_AUTH_CA, "JPKI for user authentication", CARD_AUTH.name)
    jlis_sign_ca = intermediate(JLIS_SIGN_CA, "JPKI for digital signature", CARD_SIGN.name)
    card_auth = jlis_auth_ca.issue(
        profile=CARD_AUTH, subject=card_auth_subject("A0001"),
        public_key=generate_key(KeyAlgorithm.RSA_2048).public_key(), now=now, not_after=now + timedelta(days=1800),
    )
    card_sign = jlis_sign_ca.issue(
        profile=CARD_SIGN, subject=card_sign_subject("S0001", prefecture="東京都", city="千代田区"),
        public_key=generate_key(KeyAlgorithm.RSA_2048).public_key(), now=now, not_after=now + timedelta(days=1800),
        alternative_names=attributes.encode(TARO),
    )

    vendor_key = generate_key(KeyAlgorithm.EC_P256)
    vendor_root = build_certificate(
        profile=VENDOR_ROOT, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SE Vendor Root")]),
        public_key=vendor_key.public_key(), issuer=None, signing_key=vendor_key,
        not_before=now, not_after=now + timedelta(days=7300),
    )
    attestation = build_certificate(
        profile=ATTESTATION, subject=attestation_subject(vendor="SE Vendor", model="Secure Element 1"),
        public_key=generate_key(KeyAlgorithm.EC_P256).public_key(), issuer=Issuer(vendor_root, vendor_key),
        not_before=now, not_after=now + timedelta(days=3650), aaguid=UUID("6a1f3e2c-7d44-4b5e-9a1e-2f0c8d7b6a51"),
    )

    portal = services(late.app).pki
    partial = World(
        url=url, portal=portal, jlis_root=jlis_root, jlis_auth_ca=jlis_auth_ca, jlis_sign_ca=jlis_sign_ca,
        card_auth=card_auth, card_sign=card_sign, smartphone_auth=card_auth, smartphone_sign=card_sign,
        vendor_root=vendor_root, attestation=attestation, linking_signer=linking_signer,
        files=Files(directory=tmp_path_factory.mktemp("openssl")),
    )
    smartphone_auth = partial.issue_phone(SMARTPHONE_AUTH)
    smartphone_sign = partial.issue_phone(SMARTPHONE_SIGN)
    yield World(
        url=url, portal=portal, jlis_root=jlis_root, jlis_auth_ca=jlis_auth_ca, jlis_sign_ca=jlis_sign_ca,
        card_auth=card_auth, card_sign=card_sign, smartphone_auth=smartphone_auth, smartphone_sign=smartphone_sign,
        vendor_root=vendor_root, attestation=attestation, linking_signer=linking_signer, files=partial.files,
    )
    server.shutdown()
    thread.join(timeout=10)
    services(late.app).engine.dispose()
    engine.dispose()


def chains(world: World) -> dict[str, tuple[x509.Certificate, list[x509.Certificate], x509.Certificate]]:
    """Every profile the project issues: (root, intermediates, certificate)."""
    portal_root, smartphone_ca = world.portal.root, world.portal.authority.certificate
    jlis_root = world.jlis_root.certificate
    return {
        "card-auth": (jlis_root, [world.jlis_auth_ca.certificate], world.card_auth),
        "card-sign": (jlis_root, [world.jlis_sign_ca.certificate], world.card_sign),
        "smartphone-auth": (portal_root, [smartphone_ca], world.smartphone_auth),
        "smartphone-sign": (portal_root, [smartphone_ca], world.smartphone_sign),
        "attestation": (world.vendor_root, [], world.attestation),
        "jlis-auth-ca": (jlis_root, [], world.jlis_auth_ca.certificate),
        "jlis-sign-ca": (jlis_root, [], world.jlis_sign_ca.certificate),
        "smartphone-ca": (portal_root, [], smartphone_ca),
        "jlis-root": (jlis_root, [], jlis_root),
        "portal-root": (portal_root, [], portal_root),
        "vendor-root": (world.vendor_root, [], world.vendor_root),
        "timestamping": (portal_root, [], world.portal.timestamping.certificate),
        "jlis-linking-signer": (jlis_root, [], world.linking_signer),
    }


PROFILE_NAMES = [
    "card-auth", "card-sign", "smartphone-auth", "smartphone-sign", "attestation",
    "jlis-auth-ca", "jlis-sign-ca", "smartphone-ca", "jlis-root", "portal-root", "vendor-root",
    "timestamping", "jlis-linking-signer",
]


def verify_args(world: World, name: str) -> list[str | Path]:
    root, intermediates, certificate = chains(world)[name]
    args: list[str | Path] = ["verify", "-x509_strict", "-CAfile", world.files.pem(f"{name}-root", root)]
    if intermediates:
        args += ["-untrusted", world.files.bundle(f"{name}-intermediates", *intermediates)]
    return [*args, world.files.pem(name, certificate)]


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_openssl_verifies_every_certificate_the_project_issues(world: World, name: str) -> None:
    result = openssl(*verify_args(world, name))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_every_profile_is_covered() -> None:
    assert set(PROFILES) == set(PROFILE_NAMES)


@pytest.mark.parametrize(
    ("name", "ca"),
    [("card-auth", "jlis_auth_ca"), ("card-sign", "jlis_sign_ca")],
)
def test_openssl_checks_card_certificates_against_their_crls(world: World, name: str, ca: str) -> None:
    now = datetime.now(UTC)
    args = verify_args(world, name)
    crls = [world.crl_file(getattr(world, ca), now), world.crl_file(world.jlis_root, now)]
    result = openssl(
        args[0], "-crl_check_all", "-CRLfile", crls[0], "-CRLfile", crls[1], *args[1:],
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["smartphone-auth", "smartphone-sign"])
def test_openssl_checks_phone_certificates_against_the_crls_the_portal_serves(world: World, name: str) -> None:
    args = verify_args(world, name)
    result = openssl(
        args[0], "-crl_check_all",
        "-CRLfile", to_pem_crl(world, world.served_crl("smartphone-ca")),
        "-CRLfile", to_pem_crl(world, world.served_crl("portal-root")),
        *args[1:],
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["smartphone-auth", "smartphone-sign"])
def test_openssl_downloads_the_crl_from_the_certificates_distribution_point(world: World, name: str) -> None:
    args = verify_args(world, name)
    result = openssl(args[0], "-crl_check", "-crl_download", *args[1:])
    assert result.returncode == 0, result.stderr


def to_pem_crl(world: World, der_file: Path) -> Path:
    """``openssl verify -CRLfile`` reads PEM only."""
    crl = x509.load_der_x509_crl(der_file.read_bytes())
    return world.files.der(f"{der_file.name}.pem", crl.public_bytes(serialization.Encoding.PEM))


def test_openssl_rejects_a_revoked_phone_certificate_on_the_downloaded_crl(world: World) -> None:
    certificate = world.issue_phone()
    world.portal.revoke(certificate.serial_number, x509.ReasonFlags.key_compromise)
    result = openssl(
        "verify", "-crl_check", "-crl_download",
        "-CAfile", world.files.pem("revoked-root", world.portal.root),
        "-untrusted", world.files.pem("revoked-ca", world.portal.authority.certificate),
        world.files.pem("revoked-leaf", certificate),
    )
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr


def test_openssl_rejects_a_revoked_card_certificate_on_the_crl(world: World) -> None:
    certificate = world.jlis_auth_ca.issue(
        profile=CARD_AUTH, subject=card_auth_subject("A0002"),
        public_key=generate_key(KeyAlgorithm.RSA_2048).public_key(), now=datetime.now(UTC) - timedelta(minutes=1),
        not_after=datetime.now(UTC) + timedelta(days=30),
    )
    world.jlis_auth_ca.revoke(
        certificate.serial_number, reason=x509.ReasonFlags.affiliation_changed, now=datetime.now(UTC),
    )
    result = openssl(
        "verify", "-crl_check", "-CRLfile", world.crl_file(world.jlis_auth_ca, datetime.now(UTC)),
        "-CAfile", world.files.pem("card-revoked-root", world.jlis_root.certificate),
        "-untrusted", world.files.pem("card-revoked-ca", world.jlis_auth_ca.certificate),
        world.files.pem("card-revoked", certificate),
    )
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["smartphone-ca", "portal-root"])
def test_openssl_verifies_the_crl_the_portal_serves(world: World, name: str) -> None:
    crl_file = world.served_crl(name)
    cas = world.files.bundle(f"crl-cas-{name}", world.portal.root, world.portal.authority.certificate)
    result = openssl("crl", "-inform", "DER", "-in", crl_file, "-noout", "-CAfile", cas)
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr
    text = openssl("crl", "-inform", "DER", "-in", crl_file, "-noout", "-text").stdout
    assert "Next Update:" in text
    assert "X509v3 CRL Number:" in text


@pytest.mark.parametrize("ca", ["jlis_auth_ca", "jlis_sign_ca", "jlis_root"])
def test_openssl_verifies_the_jlis_crls(world: World, ca: str) -> None:
    authority = getattr(world, ca)
    crl_file = world.crl_file(authority, datetime.now(UTC))
    ca_file = world.files.pem(f"{ca}-crl-ca", authority.certificate)
    result = openssl("crl", "-in", crl_file, "-noout", "-CAfile", ca_file)
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr


def test_openssl_refuses_a_crl_checked_against_the_wrong_ca(world: World) -> None:
    crl_file = world.served_crl("smartphone-ca")
    result = openssl(
        "crl", "-inform", "DER", "-in", crl_file, "-noout", "-CAfile", world.files.pem("wrong-ca", world.vendor_root),
    )
    assert "verify OK" not in result.stdout + result.stderr


def ask_ocsp(world: World, issuer: x509.Certificate, *target: str | Path) -> subprocess.CompletedProcess[str]:
    return openssl(
        "ocsp", "-issuer", world.files.pem(f"ocsp-issuer-{issuer.serial_number}", issuer),
        "-CAfile", world.files.pem("ocsp-root", world.portal.root),
        *target, "-url", f"{world.url}/pki/ocsp", "-resp_text",
    )


def test_openssl_ocsp_says_good(world: World) -> None:
    leaf = world.files.pem("ocsp-good", world.smartphone_auth)
    result = ask_ocsp(world, world.portal.authority.certificate, "-cert", leaf)
    assert result.returncode == 0, result.stderr
    assert f"{leaf}: good" in result.stdout
    assert "Response verify OK" in result.stderr


def test_openssl_ocsp_says_revoked_with_the_reason_after_revocation(world: World) -> None:
    certificate = world.issue_phone()
    leaf = world.files.pem("ocsp-revoked", certificate)
    before = ask_ocsp(world, world.portal.authority.certificate, "-cert", leaf)
    assert f"{leaf}: good" in before.stdout
    world.portal.revoke(certificate.serial_number, x509.ReasonFlags.key_compromise)
    after = ask_ocsp(world, world.portal.authority.certificate, "-cert", leaf)
    assert after.returncode == 0, after.stderr
    assert f"{leaf}: revoked" in after.stdout
    assert re.search(r"Reason: keyCompromise", after.stdout)
    assert "Response verify OK" in after.stderr


def test_openssl_ocsp_says_revoked_certificate_hold_for_a_suspended_certificate(world: World) -> None:
    certificate = world.issue_phone()
    leaf = world.files.pem("ocsp-held", certificate)
    world.portal.revoke(certificate.serial_number, x509.ReasonFlags.certificate_hold)
    result = ask_ocsp(world, world.portal.authority.certificate, "-cert", leaf)
    assert f"{leaf}: revoked" in result.stdout
    assert "Reason: certificateHold" in result.stdout
    world.portal.resume(certificate.serial_number)
    assert f"{leaf}: good" in ask_ocsp(world, world.portal.authority.certificate, "-cert", leaf).stdout


def test_openssl_ocsp_says_unknown_for_a_serial_never_issued(world: World) -> None:
    result = ask_ocsp(world, world.portal.authority.certificate, "-serial", "0x1a2b3c4d5e6f")
    assert result.returncode == 0, result.stderr
    assert "0x1a2b3c4d5e6f: unknown" in result.stdout
    assert "Response verify OK" in result.stderr


def test_openssl_ocsp_says_good_for_the_smartphone_ca_asking_the_root(world: World) -> None:
    ca = world.files.pem("ocsp-ca", world.portal.authority.certificate)
    result = ask_ocsp(world, world.portal.root, "-cert", ca)
    assert result.returncode == 0, result.stderr
    assert f"{ca}: good" in result.stdout
    assert "Response verify OK" in result.stderr


def test_openssl_ocsp_gets_unauthorized_for_a_card_certificate(world: World) -> None:
    result = ask_ocsp(world, world.jlis_auth_ca.certificate, "-cert", world.files.pem("ocsp-card", world.card_auth))
    assert "unauthorized" in (result.stdout + result.stderr).lower()

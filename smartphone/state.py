"""The simulated world on disk: J-LIS, cards, SE vendors and phones under one directory.

Layout of a state directory (every private key is PKCS#8 PEM encrypted with
``BestAvailableEncryption`` under the passphrase; everything else is plain)::

    jlis/jlis.json                  base URL
    jlis/<ca>.crt, jlis/<ca>.key    jlis-root, jlis-auth-ca, jlis-sign-ca
    jlis/registry/<ca>.json         what each CA issued and revoked
    jlis/registry/linking.json      the linking data: sequence-numbered same-person and successor links
    jlis/registry/linking-signer.json  the linking-data signer's certificate and key (issued by jlis-root)
    cards/<name>/card.json          PIN verifiers and retry counters
    cards/<name>/{auth,sign}.crt    the card's certificates (PEM)
    cards/<name>/{auth,sign}.key    the card's keys
    vendors/<name>/vendor.json      root and batch attestation identity (keys encrypted inline)
    vendors/<name>/root.crt         the attestation root, for the portal's trust configuration
    phones/<name>/phone.json        the SE: credentials (keys encrypted inline), counters, switch
    phones/<name>/enrollment.json   the portal, device id and smartphone certificates (PEM), once enrolled

A new J-LIS, card, vendor or phone is built in a temporary directory and renamed into place;
a file that changes (PIN counters, SE counters) is replaced atomically. So a failed command
leaves the directory as it found it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from idp.pki.registry import CertificateStatus
from smartphone.card import CardCertificates, CardKey, MyNumberCard, tries_in
from smartphone.files import AlreadyExists, CorruptState, new_directory, write_atomically
from smartphone.jlis import AUTH_CA, CA_NAMES, SIGN_CA, JLis, normalise_base_url
from smartphone.keys import WrongPassphrase
from smartphone.registry import JsonFileRegistry
from smartphone.secure_element import SecureElement
from smartphone.vendor import Vendor

__all__ = [
    "PASSPHRASE_ENV",
    "BadPassphrase",
    "MissingPassphrase",
    "State",
    "StateCorrupt",
    "StateError",
    "StateExists",
    "StateNotFound",
    "check_name",
    "read_passphrase",
]

PASSPHRASE_ENV = "SMARTPHONE_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
_FORMAT = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

T = TypeVar("T")


class StateError(Exception):
    """A state directory operation was refused; the message says why."""


class MissingPassphrase(StateError):
    """No passphrase was given, and private keys are never stored or read without one."""


class BadPassphrase(StateError):
    """The passphrase does not decrypt the stored keys."""


class StateNotFound(StateError):
    """The J-LIS, card, vendor or phone asked for is not in the state directory."""


class StateExists(StateError):
    """The J-LIS, card, vendor or phone to create is already there; nothing was overwritten."""


class StateCorrupt(StateError):
    """A stored file is not what the simulator wrote."""


def read_passphrase(passphrase_file: Path | None, environ: Mapping[str, str] = os.environ) -> bytes:
    """The passphrase from ``passphrase_file`` (one trailing newline dropped), else from
    ``$SMARTPHONE_PASSPHRASE``. Raises MissingPassphrase when neither gives a non-empty one."""
    if passphrase_file is not None:
        try:
            text = passphrase_file.read_bytes()
        except OSError as exc:
            raise MissingPassphrase(f"cannot read the passphrase file {passphrase_file}: {exc.strerror}") from exc
        passphrase = text.removesuffix(b"\n").removesuffix(b"\r")
        source = f"the passphrase file {passphrase_file}"
    else:
        passphrase = environ.get(PASSPHRASE_ENV, "").encode("utf-8")
        source = f"${PASSPHRASE_ENV}"
    if not passphrase:
        raise MissingPassphrase(
            f"a passphrase is required to encrypt private keys: {source} is empty or unset "
            f"(use --passphrase-file or set {PASSPHRASE_ENV})",
        )
    return passphrase


def check_name(kind: str, name: str) -> str:
    """``name`` if it can name a card, phone or vendor directory; raises ValueError otherwise."""
    if _NAME.fullmatch(name) is None:
        raise ValueError(f"a {kind} name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class State:
    """One user's state directory. ``passphrase`` is needed for anything touching a key."""

    def __init__(self, root: Path, passphrase: bytes | None = None) -> None:
        self.root = Path(root)
        self._passphrase = passphrase

    def __repr__(self) -> str:
        return f"State({str(self.root)!r})"

    # -- J-LIS ---------------------------------------------------------------------------------

    @property
    def jlis_dir(self) -> Path:
        """Where the J-LIS lives."""
        return self.root / "jlis"

    def create_jlis(self, *, base_url: str, now: datetime) -> JLis:
        """Create the J-LIS. Raises StateExists, MissingPassphrase, or ValueError for a bad URL."""
        passphrase = self._require_passphrase()
        base_url = normalise_base_url(base_url)
        if self.jlis_dir.exists():
            raise StateExists(f"{self.root} already holds a J-LIS; it is never overwritten")
        with self._creating(self.jlis_dir) as directory:
            jlis = JLis.create(base_url=base_url, now=now, registry_dir=directory / "registry")
            for name, pem in jlis.wrap_keys(passphrase).items():
                write_atomically(directory / f"{name}.key", pem)
            for authority in jlis.authorities:
                write_atomically(directory / f"{authority.name}.crt", _pem(authority.certificate))
            self._write_json(directory / "jlis.json", {"format": _FORMAT, "base_url": jlis.base_url})
        return self.load_jlis()

    def load_jlis(self) -> JLis:
        """The J-LIS with its keys. Raises StateNotFound, BadPassphrase or StateCorrupt."""
        passphrase = self._require_passphrase()
        if not self.jlis_dir.is_dir():
            raise StateNotFound(f"{self.root} holds no J-LIS: run `smartphone jlis create` first")
        data = self._read_json(self.jlis_dir / "jlis.json")
        base_url = data.get("base_url")
        if not isinstance(base_url, str):
            raise StateCorrupt(f"{self.jlis_dir / 'jlis.json'} has no base URL")
        certificates = {name: self._read_certificate(self.jlis_dir / f"{name}.crt") for name in CA_NAMES}
        keys = {name: self._read_bytes(self.jlis_dir / f"{name}.key") for name in CA_NAMES}
        return self._unsealing(lambda: JLis.restore(
            base_url=base_url, certificates=certificates, wrapped_keys=keys, passphrase=passphrase,
            registry_dir=self.jlis_dir / "registry",
        ))

    def jlis_registry(self, ca_name: str) -> JsonFileRegistry:
        """A J-LIS CA's registry, readable without the passphrase."""
        return JsonFileRegistry(self.jlis_dir / "registry" / f"{ca_name}.json")

    # -- cards ---------------------------------------------------------------------------------

    def card_dir(self, name: str) -> Path:
        """Where the card called ``name`` lives. Raises ValueError for a bad name."""
        return self.root / "cards" / check_name("card", name)

    def add_card(self, name: str, card: MyNumberCard) -> Path:
        """Store a newly issued card. Raises StateExists or MissingPassphrase."""
        passphrase = self._require_passphrase()
        path = self.card_dir(name)
        if path.exists():
            raise StateExists(f"a card called {name!r} already exists in {self.root}")
        with self._creating(path) as directory:
            for key, pem in card.wrap_keys(passphrase).items():
                write_atomically(directory / f"{key.value}.key", pem)
            for key in CardKey:
                write_atomically(directory / f"{key.value}.crt", _pem(card.certificate(key)))
            self._write_json(directory / "card.json", {"format": _FORMAT, "pins": card.pin_state()})
        return path

    def load_card(self, name: str) -> MyNumberCard:
        """The card with its keys. Raises StateNotFound, BadPassphrase or StateCorrupt."""
        passphrase = self._require_passphrase()
        path = self._existing(self.card_dir(name), f"no card called {name!r} in {self.root}")
        pins = self._card_pins(path)
        keys = {key: self._read_bytes(path / f"{key.value}.key") for key in CardKey}
        certificates = self.card_certificates(name)
        return self._unsealing(lambda: MyNumberCard.restore(
            wrapped_keys=keys, passphrase=passphrase, pin_state=pins, certificates=certificates,
        ))

    def save_card_pins(self, name: str, card: MyNumberCard) -> None:
        """Write the card's PIN retry counters back (after every PIN try). Raises StateNotFound."""
        path = self._existing(self.card_dir(name), f"no card called {name!r} in {self.root}")
        self._write_json(path / "card.json", {"format": _FORMAT, "pins": card.pin_state()})

    def card_certificates(self, name: str) -> CardCertificates:
        """The card's certificates, readable without the passphrase. Raises StateNotFound."""
        path = self._existing(self.card_dir(name), f"no card called {name!r} in {self.root}")
        return CardCertificates(
            auth=self._read_certificate(path / "auth.crt"), sign=self._read_certificate(path / "sign.crt"),
        )

    def card_tries(self, name: str) -> dict[CardKey, int]:
        """The card's PIN retry counters, readable without the passphrase."""
        path = self._existing(self.card_dir(name), f"no card called {name!r} in {self.root}")
        return self._unsealing(lambda: tries_in(self._card_pins(path)))

    def card_status(self, name: str) -> dict[CardKey, CertificateStatus | None]:
        """What J-LIS's registries say of the card's certificates (None: not issued here)."""
        certificates = self.card_certificates(name)
        statuses: dict[CardKey, CertificateStatus | None] = {}
        for key, ca in ((CardKey.AUTH, AUTH_CA), (CardKey.SIGN, SIGN_CA)):
            lookup = functools.partial(self.jlis_registry(ca).status, certificates[key].serial_number)
            statuses[key] = self._unsealing(lookup)
        return statuses

    # -- SE vendors and phones -----------------------------------------------------------------

    def vendor_dir(self, name: str) -> Path:
        """Where the vendor called ``name`` lives. Raises ValueError for a bad name."""
        return self.root / "vendors" / check_name("vendor", name)

    def vendor(self, name: str, *, model: str | None, now: datetime) -> Vendor:
        """The vendor called ``name``, created with ``model`` if it is new.

        Raises StateExists when it exists and makes another model than ``model``.
        """
        path = self.vendor_dir(name)
        if path.exists():
            vendor = self.load_vendor(name)
            if model is not None and model != vendor.model:
                raise StateExists(f"vendor {name!r} already exists and makes model {vendor.model!r}")
            return vendor
        passphrase = self._require_passphrase()
        vendor = Vendor.create(name=name, model=model or f"{name} SE", now=now)
        with self._creating(path) as directory:
            self._write_json(directory / "vendor.json", {"format": _FORMAT, "vendor": vendor.to_state(passphrase)})
            write_atomically(directory / "root.crt", vendor.root_pem, mode=0o644)
        return vendor

    def load_vendor(self, name: str) -> Vendor:
        """The vendor with its keys. Raises StateNotFound, BadPassphrase or StateCorrupt."""
        passphrase = self._require_passphrase()
        path = self._existing(self.vendor_dir(name), f"no vendor called {name!r} in {self.root}")
        stored = self._section(path / "vendor.json", "vendor")
        return self._unsealing(lambda: Vendor.from_state(stored, passphrase))

    def phone_dir(self, name: str) -> Path:
        """Where the phone called ``name`` lives. Raises ValueError for a bad name."""
        return self.root / "phones" / check_name("phone", name)

    def add_phone(self, name: str, *, vendor: Vendor) -> SecureElement:
        """A new phone whose SE ``vendor`` provisions. Raises StateExists or MissingPassphrase."""
        passphrase = self._require_passphrase()
        path = self.phone_dir(name)
        if path.exists():
            raise StateExists(f"a phone called {name!r} already exists in {self.root}")
        element = vendor.provision()
        with self._creating(path) as directory:
            self._write_json(directory / "phone.json", self._phone_record(vendor.name, element, passphrase))
        return element

    def load_phone(self, name: str) -> SecureElement:
        """The phone's SE. Raises StateNotFound, BadPassphrase or StateCorrupt."""
        passphrase = self._require_passphrase()
        path = self._existing(self.phone_dir(name), f"no phone called {name!r} in {self.root}")
        stored = self._section(path / "phone.json", "secure_element")
        return self._unsealing(lambda: SecureElement.from_state(stored, passphrase))

    def phone_vendor(self, name: str) -> str:
        """The name of the vendor that made the phone's SE."""
        path = self._existing(self.phone_dir(name), f"no phone called {name!r} in {self.root}")
        vendor = self._read_json(path / "phone.json").get("vendor")
        if not isinstance(vendor, str):
            raise StateCorrupt(f"{path / 'phone.json'} names no vendor")
        return vendor

    def save_phone(self, name: str, element: SecureElement) -> None:
        """Write the SE back (after every signature: its counters changed)."""
        passphrase = self._require_passphrase()
        vendor = self.phone_vendor(name)
        self._write_json(self.phone_dir(name) / "phone.json", self._phone_record(vendor, element, passphrase))

    def save_enrollment(self, name: str, enrollment: Mapping[str, Any]) -> None:
        """Record what the portal returned when the phone enrolled (``phones/<name>/enrollment.json``)."""
        path = self._existing(self.phone_dir(name), f"no phone called {name!r} in {self.root}")
        self._write_json(path / "enrollment.json", {"format": _FORMAT, "enrollment": dict(enrollment)})

    def load_enrollment(self, name: str) -> Mapping[str, Any] | None:
        """What ``save_enrollment`` recorded, or None for a phone that never enrolled."""
        path = self._existing(self.phone_dir(name), f"no phone called {name!r} in {self.root}")
        if not (path / "enrollment.json").is_file():
            return None
        return self._section(path / "enrollment.json", "enrollment")

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _phone_record(vendor: str, element: SecureElement, passphrase: bytes) -> dict[str, Any]:
        return {"format": _FORMAT, "vendor": vendor, "secure_element": element.to_state(passphrase)}

    def _require_passphrase(self) -> bytes:
        if not self._passphrase:
            raise MissingPassphrase(
                f"a passphrase is required for the private keys (use --passphrase-file or set {PASSPHRASE_ENV})",
            )
        return self._passphrase

    @staticmethod
    @contextlib.contextmanager
    def _creating(path: Path) -> Iterator[Path]:
        try:
            with new_directory(path) as directory:
                yield directory
        except AlreadyExists as exc:
            raise StateExists(f"{path} already exists; it is never overwritten") from exc

    def _unsealing(self, load: Callable[[], T]) -> T:
        try:
            return load()
        except WrongPassphrase as exc:
            raise BadPassphrase(f"the passphrase does not decrypt the keys in {self.root}") from exc
        except CorruptState as exc:
            raise StateCorrupt(f"{self.root}: {exc}") from exc

    def _card_pins(self, path: Path) -> Mapping[str, Any]:
        return self._section(path / "card.json", "pins", what="PIN records")

    def _section(self, path: Path, name: str, *, what: str | None = None) -> Mapping[str, Any]:
        section = self._read_json(path).get(name)
        if not isinstance(section, Mapping):
            raise StateCorrupt(f"{path} has no {what or name}")
        return section

    @staticmethod
    def _existing(path: Path, message: str) -> Path:
        if not path.is_dir():
            raise StateNotFound(message)
        return path

    @staticmethod
    def _read_bytes(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise StateCorrupt(f"{path} is missing") from exc

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(self._read_bytes(path))
        except ValueError as exc:
            raise StateCorrupt(f"{path} is not valid JSON") from exc
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise StateCorrupt(f"{path} is not a state file this version understands")
        return data

    def _read_certificate(self, path: Path) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self._read_bytes(path))
        except ValueError as exc:
            raise StateCorrupt(f"{path} is not a PEM certificate") from exc

    @staticmethod
    def _write_json(path: Path, data: Mapping[str, Any]) -> None:
        write_atomically(path, json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"))

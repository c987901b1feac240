"""The demo relying party's "Sign a document" page (``relying_party_demo``) against a real portal.

The RP runs in Flask's test client and talks to the portal (a loopback server, SQLite and the
in-process store) over HTTP: PAR with RFC 9396 details, then ``/authorize`` in a browser session,
the phone screen (``smartphone.phone_screen``) scanning and approving, the callback, the results
page and its downloads. Refused uploads never reach the portal (its issuer is a dead port there).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from documents import one_page_pdf
from enrollment_portal import AUTH_PIN, PASSPHRASE, SIGN_PIN, running_portal
from joserfc import jwt
from joserfc.jwk import ECKey

from idp.app import services
from relying_party_demo import sign_pages
from relying_party_demo.app import RpConfig
from relying_party_demo.app import create_app as create_rp_app
from relying_party_demo.signing import (
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENTS,
    Document,
    PendingSigning,
    SigningFailed,
    collect_results,
)
from smartphone.phone_screen import create_phone_app, enrollment_record
from smartphone.portal_client import PortalClient, enroll

CALLBACK = "http://localhost/callback"  # where Flask's test client says the RP is
CONTRACT = "賃貸借契約書 / Lease contract, flat 302: the tenant agrees to every clause.\n".encode()
TERMS = one_page_pdf("Terms of sale: the buyer agrees to every clause.")
DEAD_PORTAL = "http://127.0.0.1:9"


def upload(site, *files: tuple[bytes, str]):
    """POST /sign with ``files`` (content, file name) as the ``documents`` field."""
    return site.post("/sign", content_type="multipart/form-data",
                     data={"documents": [(io.BytesIO(content), name) for content, name in files]})


def error_code(page: str) -> str:
    found = re.search(r'id="error"[^>]*data-code="([^"]+)"', page) or re.search(r'id="error-code">([^<]+)<', page)
    assert found, page
    return found.group(1)


# --- refused uploads: nothing reaches the portal ------------------------------------------------


@pytest.fixture
def offline_rp():
    return create_rp_app(RpConfig(issuer=DEAD_PORTAL, client_id="shop", client_secret="secret")).test_client()


def test_sign_page_offers_the_upload_form(offline_rp):
    page = offline_rp.get("/sign")
    assert page.status_code == 200
    assert 'type="file" id="documents" name="documents"' in page.get_data(as_text=True)


def test_pdf_over_the_portal_limit_is_refused(offline_rp):
    too_big = b"%PDF-1.7\n" + b"0" * MAX_DOCUMENT_BYTES
    refused = upload(offline_rp, (too_big, "big.pdf"))
    assert refused.status_code == 413
    assert error_code(refused.get_data(as_text=True)) == "document_too_large"


def test_upload_over_the_form_limit_is_refused(offline_rp):
    files = [(b"x" * MAX_DOCUMENT_BYTES, f"part{number}.txt") for number in range(MAX_DOCUMENTS + 1)]
    refused = upload(offline_rp, *files)
    assert refused.status_code == 413
    assert error_code(refused.get_data(as_text=True)) == "upload_too_large"


def test_pdfs_too_large_together_for_one_pushed_request_are_refused(offline_rp):
    half = b"%PDF-1.7\n" + b"0" * (MAX_DOCUMENT_BYTES - 100)
    refused = upload(offline_rp, (half, "first.pdf"), (half + b"\n", "second.pdf"))
    assert refused.status_code == 413
    assert error_code(refused.get_data(as_text=True)) == "request_too_large"


@pytest.mark.parametrize(("content", "name"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "photo.png"),
    (b"\xff\xfe\x00\x01not utf-8", "notes.txt"),
    (b"text with a NUL \x00 byte", "binary.txt"),
])
def test_file_that_is_neither_pdf_nor_text_is_refused(offline_rp, content, name):
    refused = upload(offline_rp, (content, name))
    assert refused.status_code == 415
    assert error_code(refused.get_data(as_text=True)) == "unsupported_document"


def test_more_documents_than_the_portal_takes_are_refused(offline_rp):
    refused = upload(offline_rp, *[(b"clause %d\n" % number, f"clause{number}.txt")
                                   for number in range(MAX_DOCUMENTS + 1)])
    assert refused.status_code == 400
    assert error_code(refused.get_data(as_text=True)) == "too_many_documents"


def test_upload_without_a_file_is_refused(offline_rp):
    refused = offline_rp.post("/sign", content_type="multipart/form-data", data={})
    assert refused.status_code == 400
    assert error_code(refused.get_data(as_text=True)) == "no_document"


def test_results_of_another_session_are_not_shown(offline_rp):
    assert offline_rp.get("/sign/results/someone-elses-id").status_code == 404
    assert offline_rp.get("/sign/results/someone-elses-id/assertion.jwt").status_code == 404


# --- against the portal -------------------------------------------------------------------------


@pytest.fixture
def portal(world, tmp_path):
    with running_portal(world, tmp_path / "instance") as portal:
        yield portal


@pytest.fixture
def screen(world, portal):
    """The phone screen of phone ``pixel``, enrolled with card ``taro``."""
    element, card = world.state.load_phone("pixel"), world.state.load_card("taro")
    enrollment = enroll(client=PortalClient(portal.url), element=element, card=card, auth_pin=AUTH_PIN,
                        sign_pin=SIGN_PIN)
    world.state.save_phone("pixel", element)
    world.state.save_enrollment("pixel", enrollment_record(enrollment))
    return create_phone_app(world.state.root, "pixel", portal.url, PASSPHRASE).test_client()


@pytest.fixture
def rp(portal):
    shop = services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[CALLBACK], auth_method="client_secret_basic",
        scopes=["openid", "name", "sign"], now=datetime.now(UTC),
    )
    return create_rp_app(RpConfig(issuer=portal.url, client_id=shop.client.client_id,
                                  client_secret=shop.client_secret, scope="openid name")).test_client()


def to_login_page(rp, portal, *files: tuple[bytes, str]) -> tuple[requests.Session, str]:
    """Upload at the RP, follow it to the portal's login page: the browser and the page."""
    pushed = upload(rp, *files)
    assert pushed.status_code == 303, pushed.get_data(as_text=True)
    location = urlsplit(pushed.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{portal.url}/authorize"
    assert sorted(parse_qs(location.query)) == ["client_id", "request_uri"]  # RFC 9126 §4: nothing else
    browser = requests.Session()
    page = browser.get(pushed.headers["Location"], timeout=10)
    assert page.status_code == 200, page.text
    return browser, page.text


def form_token(page: str) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', page).group(1)


def scan(screen, login_page: str) -> str:
    home = screen.get("/").get_data(as_text=True)
    payload = re.search(r'data-payload="([^"]+)"', login_page).group(1)
    return screen.post("/scan", data={"form_token": form_token(home), "code": payload}).get_data(as_text=True)


def decide(screen, transaction_page: str, action: str) -> str:
    action_url = re.search(r'action="(/transactions/[^"]+)"', transaction_page).group(1)
    return screen.post(action_url, data={"form_token": form_token(transaction_page), "action": action}
                       ).get_data(as_text=True)


def back_to_rp(rp, portal, browser: requests.Session, login_page: str):
    """The login page continues to the RP's callback; the RP's answer to it."""
    continue_url = re.search(r'data-continue-url="([^"]+)"', login_page).group(1)
    redirected = browser.get(portal.url + continue_url, allow_redirects=False, timeout=30)
    assert redirected.status_code in {302, 303}, redirected.text
    location = urlsplit(redirected.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    return rp.get("/callback?" + location.query)


def test_documents_signed_on_the_phone_screen_are_shown_valid_with_downloads(rp, portal, screen):
    browser, login_page = to_login_page(rp, portal, (CONTRACT, "contract.txt"), (TERMS, "terms.pdf"))
    transaction = scan(screen, login_page)
    assert "署名の要求 / Signing request from" in transaction
    shown = re.findall(r'class="document-label">([^<]+)<.*?class="digest">([0-9a-f]+)<', transaction)
    assert shown == [("contract.txt", hashlib.sha256(CONTRACT).hexdigest()[:16]),
                     ("terms.pdf", hashlib.sha256(TERMS).hexdigest()[:16])]
    assert "Approved: Demo Shop" in decide(screen, transaction, "approve")

    landed = back_to_rp(rp, portal, browser, login_page)
    assert landed.status_code == 303, landed.get_data(as_text=True)
    result = rp.get(landed.headers["Location"]).get_data(as_text=True)
    assert re.findall(r'class="verdict[^"]*">([^<]+)<', result) == ["valid", "valid"]
    assert re.search(r'id="assertion-verdict"[^>]*>([^<]+)<', result).group(1) == "valid"
    assert re.search(r'id="signer-name">([^<]+)<', result).group(1) == "山田\u3000太郎"
    assert hashlib.sha256(CONTRACT).hexdigest() in result

    p7s = rp.get(re.search(r'id="download-p7s-1" href="([^"]+)"', result).group(1))
    assert p7s.status_code == 200
    assert p7s.headers["Content-Disposition"] == "attachment; filename=contract.txt.p7s"
    assert p7s.data[:1] == b"\x30"  # DER SEQUENCE: the ContentInfo
    signed_pdf = rp.get(re.search(r'id="download-pdf-2" href="([^"]+)"', result).group(1))
    assert signed_pdf.headers["Content-Disposition"] == "attachment; filename=terms-signed.pdf"
    assert signed_pdf.data.startswith(TERMS)  # an incremental update of the PDF sent
    assertion = rp.get(re.search(r'id="download-assertion" href="([^"]+)"', result).group(1))
    assert assertion.data.count(b".") == 2
    assert not re.search(r'id="download-pdf-1"|id="download-p7s-2"', result)


def test_signing_declined_on_the_phone_says_so(rp, portal, screen):
    browser, login_page = to_login_page(rp, portal, (CONTRACT, "contract.txt"))
    assert "Declined: Demo Shop" in decide(screen, scan(screen, login_page), "decline")
    declined = back_to_rp(rp, portal, browser, login_page)
    assert declined.status_code == 400
    page = declined.get_data(as_text=True)
    assert error_code(page) == "access_denied"
    assert "Signing was declined on the phone: nothing was signed." in page


def test_signing_response_from_another_issuer_is_refused(rp, portal):
    to_login_page(rp, portal, (CONTRACT, "contract.txt"))
    with rp.session_transaction() as session:
        [state] = session["signing"]
    forged = rp.get("/callback?" + urlencode({"code": "a-code", "state": state, "iss": "https://evil.example"}))
    assert forged.status_code == 400
    assert error_code(forged.get_data(as_text=True)) == "invalid_response"
    with rp.session_transaction() as session:
        assert state in session["signing"]  # the real answer can still come back


def test_forged_code_is_refused_at_the_token_endpoint(rp, portal):
    to_login_page(rp, portal, (CONTRACT, "contract.txt"))
    with rp.session_transaction() as session:
        [state] = session["signing"]
    forged = rp.get("/callback?" + urlencode({"code": "a-forged-code", "state": state, "iss": portal.url}))
    assert forged.status_code == 400
    assert error_code(forged.get_data(as_text=True)) == "invalid_grant"


def test_push_with_a_wrong_client_secret_is_refused(portal):
    shop = services(portal.app).oidc.clients.register(
        name="Demo Shop", redirect_uris=[CALLBACK], auth_method="client_secret_basic", scopes=["openid", "sign"],
        now=datetime.now(UTC),
    )
    site = create_rp_app(RpConfig(issuer=portal.url, client_id=shop.client.client_id,
                                  client_secret="not-the-secret", scope="openid")).test_client()
    refused = upload(site, (CONTRACT, "contract.txt"))
    assert refused.status_code == 502
    assert error_code(refused.get_data(as_text=True)) == "invalid_client"


def test_callback_for_a_signing_request_no_longer_kept_is_refused(offline_rp):
    """The session still names the request, but the site's store pushed it out (or it expired)."""
    with offline_rp.session_transaction() as session:
        session["signing"] = {"a-state": "a-pending-id-long-gone"}
    late = offline_rp.get("/callback?" + urlencode({"iss": DEAD_PORTAL, "state": "a-state", "code": "x"}))
    assert late.status_code == 400
    assert error_code(late.get_data(as_text=True)) == "request_expired"
    with offline_rp.session_transaction() as session:
        assert session["signing"] == {}  # not offered again


def test_assertion_naming_someone_other_than_the_id_token_is_refused(rp, portal, screen, monkeypatch):
    """The real flow, but the results' assertion names another subject than the real ID token."""
    real = sign_pages.collect_results

    def another_signer(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), subject="someone-else")

    monkeypatch.setattr(sign_pages, "collect_results", another_signer)
    browser, login_page = to_login_page(rp, portal, (CONTRACT, "contract.txt"))
    assert "Approved: Demo Shop" in decide(screen, scan(screen, login_page), "approve")
    refused = back_to_rp(rp, portal, browser, login_page)
    assert refused.status_code == 502
    assert error_code(refused.get_data(as_text=True)) == "invalid_response"
    with rp.session_transaction() as session:
        assert not session.get("signed")  # no results page to come back to


def test_upload_while_the_portal_is_unreachable_says_so(offline_rp):
    refused = upload(offline_rp, (CONTRACT, "contract.txt"))
    assert refused.status_code == 502
    assert error_code(refused.get_data(as_text=True)) == "temporarily_unavailable"


# --- what the RP checks in the portal's answer (a stand-in portal) ------------------------------

ISSUER = "https://portal.example"
KEY = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256", "use": "sig"})


@dataclass
class Answer:
    status_code: int
    body: dict

    def json(self) -> dict:
        return self.body


@dataclass
class StandInPortal:
    """Answers ``GET /signing/v1/results`` with ``results`` and every verification with ``verdict``."""

    results: dict
    verdict: Answer = field(default_factory=lambda: Answer(200, {"valid": True}))
    verified: list = field(default_factory=list)

    def load_server_metadata(self) -> dict:
        return {"issuer": ISSUER, "id_token_signing_alg_values_supported": ["ES256"],
                "signing_results_endpoint": ISSUER + "/signing/v1/results",
                "signing_verification_endpoint": ISSUER + "/signing/verify"}

    published: list = field(default_factory=lambda: [KEY])
    """The keys the portal publishes; the site cached the first one only."""

    def fetch_jwk_set(self, *, force: bool = False) -> dict:
        return {"keys": [key.as_dict(private=False) for key in (self.published if force else self.published[:1])]}

    def get(self, url: str, **_options) -> Answer:
        assert url == ISSUER + "/signing/v1/results"
        return Answer(200, self.results)

    def post(self, url: str, *, files: dict, **_options) -> Answer:
        assert url == ISSUER + "/signing/verify"
        self.verified.append(sorted(files))
        return self.verdict


def asserted(*documents: Document) -> list[dict]:
    """The assertion's ``documents`` claim for ``documents`` (docs/signing.md)."""
    return [{"label": document.label, "digest": base64.urlsafe_b64encode(document.digest).rstrip(b"=").decode()}
            for document in documents]


def assertion(**claims) -> str:
    return jwt.encode({"alg": "ES256", "kid": "k1", "typ": "signed-document+jwt"},
                      {"iss": ISSUER, "aud": "shop", "sub": "pairwise-sub"} | claims, KEY)


def pending(*documents: Document) -> PendingSigning:
    return PendingSigning(documents=documents)


TEXT_DOCUMENT = Document(label="contract.txt", content=CONTRACT, kind="text")
PDF_DOCUMENT = Document(label="terms.pdf", content=TERMS, kind="pdf")


def cades_entry(document: Document = TEXT_DOCUMENT, **changes) -> dict:
    return {"label": document.label, "hash": base64.b64encode(document.digest).decode(),
            "signature_format": "cades", "signature": base64.b64encode(b"0\x80").decode()} | changes


def collect(stand_in: StandInPortal, *documents: Document):
    return collect_results(stand_in, issuer=ISSUER, client_id="shop", token={"access_token": "t"},
                           pending=pending(*documents))


def test_results_for_a_document_not_asked_for_are_refused():
    other = base64.b64encode(hashlib.sha256(b"another document").digest()).decode()
    stand_in = StandInPortal({"documents": [cades_entry(hash=other)], "assertion": assertion()})
    with pytest.raises(SigningFailed) as refused:
        collect(stand_in, TEXT_DOCUMENT)
    assert refused.value.code == "invalid_response"


def test_results_missing_a_document_are_refused():
    stand_in = StandInPortal({"documents": [cades_entry()], "assertion": assertion()})
    with pytest.raises(SigningFailed) as refused:
        collect(stand_in, TEXT_DOCUMENT, PDF_DOCUMENT)
    assert refused.value.code == "invalid_response"


def test_signed_pdf_that_does_not_extend_the_pdf_sent_is_invalid():
    other_pdf = one_page_pdf("Terms of sale: the seller may change every clause.")
    entry = {"label": "terms.pdf", "hash": base64.b64encode(PDF_DOCUMENT.digest).decode(),
             "signature_format": "pades", "signed_pdf": base64.b64encode(other_pdf).decode()}
    stand_in = StandInPortal({"documents": [entry], "assertion": assertion()})
    [document] = collect(stand_in, PDF_DOCUMENT).documents
    assert document.verdict == "invalid: not_the_document_sent"
    assert ["pdf"] not in stand_in.verified  # judged without asking the portal


def test_signature_the_portal_finds_invalid_is_shown_invalid_with_its_reason():
    stand_in = StandInPortal({"documents": [cades_entry()], "assertion": assertion()},
                             verdict=Answer(200, {"valid": False, "reason": "document_modified"}))
    [document] = collect(stand_in, TEXT_DOCUMENT).documents
    assert document.verdict == "invalid: document_modified"
    assert ["document", "signature"] in stand_in.verified


def test_verification_the_portal_refuses_is_shown_invalid():
    stand_in = StandInPortal({"documents": [cades_entry()], "assertion": assertion()},
                             verdict=Answer(413, {"type": "about:blank", "title": "Too large"}))
    [document] = collect(stand_in, TEXT_DOCUMENT).documents
    assert document.verdict == "invalid: verification_refused (413)"


@pytest.mark.parametrize(("token", "attack"), [
    (lambda: assertion(aud="another-shop"), "made for another site"),
    (lambda: assertion(iss="https://evil.example"), "from another issuer"),
    (lambda: jwt.encode({"alg": "ES256", "kid": "k1", "typ": "JWT"}, {"iss": ISSUER, "aud": "shop"}, KEY),
     "not typed signed-document+jwt"),
    (lambda: jwt.encode({"alg": "ES256", "kid": "k1", "typ": "signed-document+jwt"}, {"iss": ISSUER, "aud": "shop"},
                        ECKey.generate_key("P-256", parameters={"kid": "k1"})), "signed with another key"),
])
def test_assertion_that_does_not_hold_up_is_shown_invalid(token, attack):
    stand_in = StandInPortal({"documents": [cades_entry()], "assertion": token()})
    outcome = collect(stand_in, TEXT_DOCUMENT)
    assert outcome.assertion_verdict == "invalid: bad_assertion", attack
    assert outcome.subject == "", attack


def test_answer_to_the_first_of_two_open_signing_requests_is_still_a_signing_answer(rp, portal, screen):
    browser, first_page = to_login_page(rp, portal, (CONTRACT, "contract.txt"))
    to_login_page(rp, portal, (TERMS, "terms.pdf"))  # a second tab
    assert "Declined: Demo Shop" in decide(screen, scan(screen, first_page), "decline")
    declined = back_to_rp(rp, portal, browser, first_page)
    assert declined.status_code == 400
    assert error_code(declined.get_data(as_text=True)) == "access_denied"
    with rp.session_transaction() as session:
        assert len(session["signing"]) == 1  # the second is still open


def test_assertion_of_other_documents_is_shown_invalid():
    """A valid assertion of this signer for this site, but of another request (an older one, say)."""
    other = Document(label="contract.txt", content=b"an older contract", kind="text")
    stand_in = StandInPortal({"documents": [cades_entry()], "assertion": assertion(documents=asserted(other))})
    outcome = collect(stand_in, TEXT_DOCUMENT)
    assert outcome.assertion_verdict == "invalid: not_the_documents_sent"


def test_assertion_of_the_documents_sent_is_valid():
    stand_in = StandInPortal({"documents": [cades_entry()], "assertion": assertion(documents=asserted(TEXT_DOCUMENT))})
    outcome = collect(stand_in, TEXT_DOCUMENT)
    assert (outcome.assertion_verdict, outcome.subject) == ("valid", "pairwise-sub")


def test_a_portal_whose_metadata_names_no_results_endpoint_is_an_invalid_response():
    stand_in = StandInPortal({"documents": [cades_entry()], "assertion": assertion()})
    stand_in.load_server_metadata = lambda: {"issuer": ISSUER}
    with pytest.raises(SigningFailed) as refused:
        collect(stand_in, TEXT_DOCUMENT)
    assert refused.value.code == "invalid_response"


def test_assertion_signed_with_a_key_published_since_the_site_cached_the_keys_is_valid():
    rotated = ECKey.generate_key("P-256", parameters={"kid": "k2", "alg": "ES256", "use": "sig"})
    token = jwt.encode({"alg": "ES256", "kid": "k2", "typ": "signed-document+jwt"},
                       {"iss": ISSUER, "aud": "shop", "sub": "pairwise-sub", "documents": asserted(TEXT_DOCUMENT)},
                       rotated)
    stand_in = StandInPortal({"documents": [cades_entry()], "assertion": token}, published=[KEY, rotated])
    outcome = collect(stand_in, TEXT_DOCUMENT)
    assert (outcome.assertion_verdict, outcome.subject) == ("valid", "pairwise-sub")

"""Limits of every field a caller sends: NFC, no control characters, lengths, digit rules."""

from __future__ import annotations

import unicodedata

import pytest
from pydantic import ValidationError

from contracts.api import EndDossier, ReplyRequest, RequestSupplement, SubmitDossier
from contracts.common import Applicant, DocumentRef

BASE = {
    "procedure_code": "1.000894",
    "applicant": {"name": "Trần Văn Bình", "id_number": "001090001234"},
    "documents": [{"code": "TK"}],
}


def _errors(model: type, data: dict) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return info.value.errors(include_url=False)


@pytest.mark.parametrize(
    ("object_type", "value", "ok"),
    [
        (1, "001090001234", True),
        (1, "123456789", True),
        (1, "0010900012345", False),
        (1, "001-090-001234", False),
        (1, " 001090001234", False),
        (1, "１２３４５６７８９０１２", False),  # full-width digits are not ASCII digits
        (2, "0101234567", True),
        (2, "0101234567-001", True),
        (2, "0101234567001", True),
        (2, "0101234567-01", False),
        (2, "01-01234567", False),
    ],
)
def test_id_number_counts_the_whole_field(object_type: int, value: str, ok: bool) -> None:
    data = {"name": "Người Nộp", "object_type": object_type, "id_number": value}
    if ok:
        assert Applicant.model_validate(data).id_number == value
    else:
        (e,) = _errors(Applicant, data)
        assert e["loc"] == ("id_number",)


def test_a_million_dashes_is_refused_by_length() -> None:
    data = {**BASE, "applicant": {**BASE["applicant"], "id_number": "-" * 1_000_000 + "1" * 12}}
    (e,) = _errors(SubmitDossier, data)
    assert e["loc"] == ("applicant", "id_number") and e["type"] == "string_too_long"


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u202e", "\ud800"])
def test_control_characters_are_refused_everywhere(char: str) -> None:
    fields = {
        ("applicant", "name"): {**BASE, "applicant": {**BASE["applicant"], "name": f"An{char}h"}},
        ("applicant", "address"): {
            **BASE,
            "applicant": {**BASE["applicant"], "address": f"Số 1{char}"},
        },
        ("summary",): {**BASE, "summary": f"Xin{char}"},
        ("documents", 0, "name"): {**BASE, "documents": [{"code": "TK", "name": f"T{char}K"}]},
        ("documents", 0, "code"): {**BASE, "documents": [{"code": f"T{char}K"}]},
        ("documents", 0, "url"): {**BASE, "documents": [{"code": "TK", "url": f"x{char}"}]},
        ("procedure_code",): {**BASE, "procedure_code": f"1.00{char}"},
        ("applicant", "email"): {
            **BASE,
            "applicant": {**BASE["applicant"], "email": f"a{char}@example.vn"},
        },
        ("applicant", "phone"): {
            **BASE,
            "applicant": {**BASE["applicant"], "phone": f"0987654321{char}"},
        },
    }
    for loc, data in fields.items():
        errors = _errors(SubmitDossier, data)
        assert [e["loc"] for e in errors] == [loc], (loc, errors)
    assert _errors(EndDossier, {"reason": f"a{char}"})[0]["loc"] == ("reason",)
    assert _errors(RequestSupplement, {"missing": ["TK"], "note": f"a{char}"})[0]["loc"] == (
        "note",
    )
    assert _errors(ReplyRequest, {"decision": "agree", "reasons": f"a{char}"})[0]["loc"] == (
        "reasons",
    )
    assert _errors(ReplyRequest, {"decision": "agree", "nonce": f"a{char}"})[0]["loc"] == ("nonce",)


def test_newlines_only_in_multiline_fields_and_text_is_nfc() -> None:
    ok = SubmitDossier.model_validate({**BASE, "summary": "Dòng một\r\nDòng hai"})
    assert ok.summary == "Dòng một\nDòng hai"
    (e,) = _errors(SubmitDossier, {**BASE, "applicant": {**BASE["applicant"], "name": "A\nB"}})
    assert "single line" in e["msg"]
    decomposed = unicodedata.normalize("NFD", "Nguyễn Thị Hoà")
    a = Applicant(name=decomposed, id_number="001090001234")
    assert a.name == unicodedata.normalize("NFC", "Nguyễn Thị Hoà") != decomposed


def test_lengths_and_list_sizes_are_bounded() -> None:
    too_long = {
        ("applicant", "name"): {**BASE, "applicant": {**BASE["applicant"], "name": "x" * 201}},
        ("summary",): {**BASE, "summary": "x" * 2001},
        ("documents", 0, "code"): {**BASE, "documents": [{"code": "X" * 41}]},
        ("documents", 0, "url"): {**BASE, "documents": [{"code": "X", "url": "h" * 2001}]},
        ("documents",): {**BASE, "documents": [{"code": "TK"}] * 51},
    }
    for loc, data in too_long.items():
        assert [e["loc"] for e in _errors(SubmitDossier, data)] == [loc]
    assert _errors(RequestSupplement, {"missing": ["TK"] * 51})[0]["loc"] == ("missing",)


def test_agency_ids_follow_the_national_format() -> None:
    for bad in ("H29", "000.00.01.H29 ", "000.00.16.h29", "000.00.01.H29\x00", "x" * 5000):
        (e,) = _errors(SubmitDossier, {**BASE, "receiving_agency": bad})
        assert e["loc"] == ("receiving_agency",)
    assert SubmitDossier.model_validate({**BASE, "receiving_agency": "000.00.01.H29"})


def test_emails_are_strict() -> None:
    for bad in ("a@b", "a b@example.vn", "Tên <a@example.vn>", "a@localhost", "a@x.local"):
        assert _errors(Applicant, {"name": "An", "id_number": "123456789", "email": bad})
    a = Applicant(name="An", id_number="123456789", email="an@Example.VN")
    assert a.email == "an@example.vn"
    assert DocumentRef(code="QSDD", url="https://hs.example.vn/a.pdf").url

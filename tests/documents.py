"""Documents the signing tests and bench send, as a relying party or a person would: made with
pyHanko's PDF writer (no PDF is written by hand). ``tests/`` is on the import path of every test
(its conftest) and of ``bench/sign.py``."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pyhanko.pdf_utils import generic as pdf_generic
from pyhanko.pdf_utils import writer as pdf_writer

__all__ = ["one_page_pdf"]


def one_page_pdf(text: str) -> bytes:
    """A one-page PDF with ``text`` on it."""
    generic: Any = pdf_generic  # pyHanko's PDF object model and writer are untyped
    name = generic.pdf_name
    writer: Any = pdf_writer.PdfFileWriter()  # type: ignore[no-untyped-call]
    content = writer.add_object(generic.StreamObject(stream_data=f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()))
    font = generic.DictionaryObject({
        name("/Type"): name("/Font"), name("/Subtype"): name("/Type1"), name("/BaseFont"): name("/Helvetica"),
    })
    writer.insert_page(generic.DictionaryObject({
        name("/Type"): name("/Page"),
        name("/MediaBox"): generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 595, 842)]),
        name("/Contents"): content,
        name("/Resources"): generic.DictionaryObject({name("/Font"): generic.DictionaryObject({name("/F1"): font})}),
    }))
    out = BytesIO()
    writer.write(out)
    return out.getvalue()

"""Meeting codes (issue 6, "Join by code"): at least 40 bits, no look-alike
characters, read back whatever the case, spacing or dashes."""

from __future__ import annotations

from fhirserver.telehealth.codes import ALPHABET, BITS, display, new_code, normalize


def test_codes_are_random_enough_and_unambiguous() -> None:
    assert BITS >= 40
    assert not set("01OILUV") & set(ALPHABET)
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(set(code) <= set(ALPHABET) for code in codes)
    used = {character for code in codes for character in code}
    assert used == set(ALPHABET)


def test_a_code_reads_back_however_it_is_typed() -> None:
    code = new_code()
    shown = display(code)
    assert shown.count("-") == 2 and shown.replace("-", "") == code
    assert normalize(shown) == code
    assert normalize(f"  {shown.lower()} ") == code
    assert normalize(" ".join(code)) == code


def test_what_cannot_be_a_code_is_none() -> None:
    assert normalize("") is None
    assert normalize("K7PX-3MWQ") is None
    assert normalize("K7PX-3MWQ-9O") is None
    assert normalize("K7PX-3MWQ-9CX") is None

"""
``acceptableCodings``: Accept-Encoding negotiation (RFC 9110 §12.5.3), table
driven, pure (no reactor).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connserver._http.encoding import IDENTITY, acceptableCodings

BR_GZIP = (b"br", b"gzip")
ID = IDENTITY


@pytest.mark.parametrize(
    "values, expected",
    [
        pytest.param(None, (ID,), id="no-field-identity-only"),
        pytest.param([b""], (ID,), id="rfc9110-12.5.3-empty-value-no-coding"),
        pytest.param([b"gzip"], (b"gzip", ID), id="gzip"),
        pytest.param([b"br"], (b"br", ID), id="br"),
        pytest.param(
            [b"gzip, deflate, br, zstd"], (b"br", b"gzip", ID), id="browser-tie-br"
        ),
        pytest.param([b"gzip, br"], (b"br", b"gzip", ID), id="tie-server-order"),
        pytest.param(
            [b"br;q=0.5, gzip;q=0.8"], (b"gzip", b"br", ID), id="q-values-order"
        ),
        pytest.param([b"gzip;q=0"], (ID,), id="q0-excludes"),
        pytest.param([b"GZIP"], (b"gzip", ID), id="case-insensitive"),
        pytest.param([b"x-gzip"], (b"gzip", ID), id="rfc9110-8.4.1.3-x-gzip"),
        pytest.param([b"*"], (b"br", b"gzip", ID), id="star-everything"),
        pytest.param([b"*;q=0"], (), id="star-q0-excludes-identity"),
        pytest.param(
            [b"*;q=0, identity"], (ID,), id="identity-more-specific-than-star"
        ),
        pytest.param([b"identity;q=0"], (), id="identity-q0-nothing-listed"),
        pytest.param(
            [b"gzip, identity;q=0"], (b"gzip",), id="identity-excluded-gzip-ok"
        ),
        pytest.param(
            [b"gzip;q=0.5, identity"], (ID, b"gzip"), id="identity-higher-weight"
        ),
        pytest.param(
            [b"gzip;q=0.001"], (b"gzip", ID), id="unlisted-identity-ranks-last"
        ),
        pytest.param(
            [b"*;q=0.5, gzip"], (b"gzip", b"br", ID), id="star-weight-for-unlisted"
        ),
        pytest.param([b"*, gzip;q=0"], (b"br", ID), id="star-but-gzip-excluded"),
        pytest.param([b"deflate, compress"], (ID,), id="unsupported-only"),
        pytest.param([b"gzip", b"br"], (b"br", b"gzip", ID), id="two-field-lines"),
        pytest.param(
            [b" gzip ;  q=0.9 ,, br ; q=1.0 "], (b"br", b"gzip", ID), id="whitespace"
        ),
        pytest.param([b"gzip;Q=0"], (ID,), id="q-name-case-insensitive"),
        pytest.param([b"gzip;q=abc"], (ID,), id="malformed-q-ignored"),
        pytest.param([b"gzip;q=2"], (ID,), id="q-above-one-ignored"),
        pytest.param([b"identity;q=bad"], (ID,), id="malformed-identity-q-ignored"),
        pytest.param([b"gzip;level=9"], (b"gzip", ID), id="other-params-ignored"),
        pytest.param([b"gzip;q=0.8000"], (b"gzip", ID), id="long-fraction-tolerated"),
        pytest.param([b"gzip, gzip;q=0"], (b"gzip", ID), id="first-occurrence-counts"),
    ],
)
def test_acceptableCodings(
    values: list[bytes] | None, expected: tuple[bytes, ...]
) -> None:
    assert acceptableCodings(values, BR_GZIP) == expected


def test_onlyWhatTheServerSupports() -> None:
    assert acceptableCodings([b"br, gzip"], (b"gzip",)) == (b"gzip", ID)
    assert acceptableCodings([b"br, identity;q=0"], (b"gzip",)) == ()


@given(st.lists(st.binary(max_size=40), max_size=3))
def test_anyInputGivesSupportedCodingsOnly(values: list[bytes]) -> None:
    result = acceptableCodings(values, BR_GZIP)
    assert set(result) <= {b"br", b"gzip", ID}
    assert len(set(result)) == len(result)

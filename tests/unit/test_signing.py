"""secstor's request signing must equal the cs client's, byte for byte."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cs import CloudStack
from hypothesis import given, settings
from hypothesis import strategies as st

from secstor.security import signing

pytestmark = pytest.mark.nodb

SECRET = "s3cr3t-key/with+odd=chars"


def cs_signature(params: dict[str, str], secret: str = SECRET) -> str:
    """The signature cs==5.2.0 itself computes for these parameters."""
    data = dict(params)
    CloudStack(endpoint="http://unused", key="k", secret=secret)._sign(data)
    return data["signature"]


def test_matches_cs_for_awkward_values_and_camel_case_keys():
    params = {"command": "registerTemplate", "apiKey": "KEY", "response": "json", "templateId": "a b*~é/+",
              "Zeta": "1", "alpha": "%41", "details[0].key": "x=y&z"}
    assert signing.sign(params, SECRET) == cs_signature(params)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(
    keys=st.from_regex(r"[A-Za-z][A-Za-z0-9_.\[\]]{0,15}", fullmatch=True).filter(
        lambda k: k.lower() != "signature"),
    values=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    max_size=8,
))
def test_matches_cs_for_any_parameters(params):
    assert signing.sign(params, SECRET) == cs_signature(params)


def test_the_signature_parameter_itself_is_not_signed():
    params = {"command": "listZones", "apiKey": "KEY"}
    assert signing.sign({**params, "signature": "old"}, SECRET) == signing.sign(params, SECRET)


def test_verify_accepts_only_the_exact_parameters_and_secret():
    params = {"command": "listZones", "apiKey": "KEY", "name": "zone1"}
    good = cs_signature(params)
    assert signing.verify(params, SECRET, good)
    assert not signing.verify({**params, "name": "zone2"}, SECRET, good)
    assert not signing.verify(params, "other-secret", good)
    assert not signing.verify(params, SECRET, good[:-2] + "xx")


@pytest.mark.parametrize("text", ["2025-06-01T10:00:00+0000", "2025-06-01T10:00:00Z", "2025-06-01T10:00:00+00:00",
                                  "2025-06-01T10:00:00.000+0000", "2025-06-01T10:00:00 0000",
                                  "2025-06-01T12:00:00+0200"])
def test_expires_formats(text):
    """cs's format, ISO variants, and '+' turned into a space by form decoding."""
    assert signing.parse_expires(text) == datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc)


def test_signed_params_build_a_request_cs_would_accept_as_its_own():
    params = signing.signed_params("listZones", {"name": "a b"}, "KEY", SECRET, ttl=300)
    assert (params["command"], params["apiKey"], params["response"], params["signatureVersion"]) == (
        "listZones", "KEY", "json", "3")
    unsigned = {k: v for k, v in params.items() if k != "signature"}
    assert params["signature"] == cs_signature(unsigned)
    remaining = signing.parse_expires(params["expires"]) - datetime.now(timezone.utc)
    assert timedelta(seconds=290) < remaining <= timedelta(seconds=300)

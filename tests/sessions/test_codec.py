"""The stored value's codec read and written directly: what a Worker or an older release may have written,
and what the store writes (django_cfkv.sessions.codec)."""

import json

import pytest
from django.contrib.sessions.serializers import JSONSerializer
from django.core import signing

from django_cfkv.sessions.codec import canonical, decode_value, dumps_json, dumps_signed, parse, salt_for
from django_cfkv.sessions.keys import hashed_id

SALT = salt_for("SessionStore")
MS = 1_800_000_000_000  # an instant in epoch milliseconds


def worker_value(**fields):
    return json.dumps({"userId": "7", "createdAt": MS, "data": {}, **fields})


def test_times_keep_their_milliseconds():
    value = parse(worker_value(expiresAt=MS + 1_500), "json", SALT)
    assert value.expires == (MS + 1_500) / 1000


@pytest.mark.parametrize(("expires_at", "ends_at", "expected"), [
    (MS + 60_000, MS + 120_000, MS + 60_000),  # sliding expiry before the absolute end: it holds
    (MS + 180_000, MS + 120_000, MS + 120_000),  # a Worker slid expiresAt past the end: the end wins
    (None, MS + 120_000, MS + 120_000),  # only an absolute end
    (MS + 60_000, None, MS + 60_000),  # only a sliding expiry
])
def test_a_session_ends_at_the_earlier_of_its_expiry_and_its_absolute_end(expires_at, ends_at, expected):
    fields = {k: v for k, v in (("expiresAt", expires_at), ("absoluteExpiresAt", ends_at)) if v is not None}
    assert parse(worker_value(**fields), "json", SALT).expires == expected / 1000


def test_a_signed_value_read_under_another_key_is_refused_whichever_way_it_was_copied():
    first, second = "abcdefgh12345678", "zyxwvuts87654321"
    assert hashed_id(first) > hashed_id(second)  # a refusal by order of the hashes fails one of the two copies
    for written_for, read_as in ((first, second), (second, first)):
        raw = dumps_signed({"data": {"n": 1}}, SALT, JSONSerializer, written_for)
        assert parse(raw, "signed", SALT, written_for).data == {"n": 1}
        with pytest.raises(ValueError, match="written for another session key"):
            parse(raw, "signed", SALT, read_as)


def test_a_signed_value_is_compressed():
    raw = dumps_signed({"data": {"cart": ["the same item"] * 200}}, SALT, JSONSerializer, "abcdefgh12345678")
    assert raw.startswith(".") and len(raw) < 600  # Django's mark of a compressed payload


def test_a_json_value_keeps_text_as_utf8():
    raw = dumps_json({"data": {"name": "Zoë 東京"}})
    assert "Zoë 東京" in raw and json.loads(raw)["data"]["name"] == "Zoë 東京"


def test_the_canonical_form_of_json_data_does_not_depend_on_the_order_of_its_keys():
    """save() writes only when the canonical form changed: a dict rebuilt in another order is no change."""
    one, other = {"a": 1, "b": {"x": 1, "y": 2}}, {"b": {"y": 2, "x": 1}, "a": 1}
    assert canonical(one, "json", JSONSerializer) == canonical(other, "json", JSONSerializer)
    assert canonical(one, "json", JSONSerializer) != canonical({"a": 2, "b": {"x": 1, "y": 2}}, "json", JSONSerializer)


def test_a_signed_value_whose_payload_cannot_be_decoded_is_a_value_error():
    """Signed with the site's key (by an older release, or another site sharing SECRET_KEY) but not a JSON
    payload, compressed or not: a ValueError saying so, never zlib's or the serializer's own exception."""
    signer = signing.TimestampSigner(salt=SALT)
    for payload in ("." + signing.b64_encode(b"not zlib at all").decode(), signing.b64_encode(b"{not json").decode()):
        with pytest.raises(ValueError, match="cannot be decoded"):
            decode_value(signer.sign(payload), "signed")

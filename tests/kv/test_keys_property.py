"""Property tests: any key KV accepts round-trips exactly, and reaches only its own URL path.

The expected path is built here, from the rule (every byte of the key's UTF-8 that is not
an unreserved character is percent-encoded, "/" included), not by the client's encode_key.
"""

import re
import string
from urllib.parse import unquote, urlsplit

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_cfkv.client import KVClient, encode_key
from django_cfkv.exceptions import KVValueError

# Any unicode text (surrogates excluded: not encodable) of 1..512 UTF-8 bytes, except "." and "..".
valid_keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200).filter(
    lambda k: len(k.encode("utf-8")) <= 512 and k not in (".", "..")
)
tricky_keys = st.one_of(
    valid_keys,
    st.builds(lambda a, b: a + b, st.sampled_from(["/", "?", "#", "%", " ", "..x", "%2F", "../", "\x00"]), valid_keys),
)
HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")  # RFC 3986, section 2.3


def expected_segment(key):
    """The key as one path segment: each byte of its UTF-8 outside the unreserved set as %XX."""
    return "".join(chr(b) if chr(b) in UNRESERVED else f"%{b:02X}" for b in key.encode("utf-8"))


@given(key=tricky_keys)
@settings(max_examples=150, deadline=None, suppress_health_check=HEALTH)
def test_round_trip_on_every_backend(kv, key):
    kv.put(key, key.encode("utf-8"))
    assert kv.get(key) == key.encode("utf-8")
    assert key in [k.name for k in kv.iter_keys(prefix=key)]
    kv.delete(key)
    assert kv.get(key) is None


@given(key=tricky_keys)
@settings(max_examples=300, deadline=None)
def test_encoded_key_is_one_path_segment(key):
    encoded = encode_key(key)
    assert encoded == expected_segment(key)
    assert "/" not in encoded and "?" not in encoded and "#" not in encoded
    assert unquote(encoded) == key


@given(key=st.text(min_size=1, max_size=20).map(lambda s: s * 40))
@settings(max_examples=50, deadline=None)
def test_too_long_keys_are_refused(key):
    if len(key.encode("utf-8", "surrogatepass")) > 512:
        with pytest.raises(KVValueError):
            encode_key(key)


@given(key=tricky_keys)
@settings(max_examples=100, deadline=None, suppress_health_check=HEALTH)
def test_value_calls_only_touch_their_own_path(key):
    base = "https://api.cloudflare.com/client/v4/accounts/a/storage/kv/namespaces/n"
    client = KVClient("a", "n", "t", max_retries=0)
    with responses.RequestsMock() as api:
        api.add(responses.GET, re.compile(re.escape(base) + "/.*"), body=b"v")
        client.get(key)
        [call] = api.calls
        assert urlsplit(call.request.url).path == urlsplit(base).path + "/values/" + expected_segment(key)


class _Sly(str):
    """A key whose own text, when formatted into a URL, is another path."""

    def __str__(self):
        return "../../../tokens"

    def __format__(self, spec):
        return "../../../tokens"


@pytest.mark.parametrize("key", [_Sly("plain"), _Sly("with space")])
def test_a_str_subclass_key_reaches_only_its_own_path(key):
    """The path is built from the key's characters, never from a subclass's __str__ or __format__."""
    assert type(encode_key(key)) is str
    assert encode_key(key) == expected_segment(str.__str__(key))
    base = "https://api.cloudflare.com/client/v4/accounts/a/storage/kv/namespaces/n"
    with responses.RequestsMock() as api:
        api.add(responses.GET, re.compile(re.escape(base) + "/.*"), body=b"v")
        KVClient("a", "n", "t", max_retries=0).get(key)
        [call] = api.calls
    assert urlsplit(call.request.url).path == urlsplit(base).path + "/values/" + expected_segment(str.__str__(key))

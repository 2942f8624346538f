"""The cache entry codec on its own (django_cfkv.cache.codec): what it writes, and what it refuses to read.

The attacker here can write the namespace but holds no SECRET_KEY: every entry below is one they could plant.
"""

import base64
import json
import pathlib
import pickle
import zlib

import pytest

from django_cfkv.cache.codec import EntryCodec, SignatureError, decode_entry

KV_KEY = "cache:app:1:k"


class Trap:
    """A pickle that creates ``path`` when it is loaded."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def planted(**fields):
    return json.dumps({"expires": None, **fields})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"x": float("-inf")}])
def test_a_json_cache_refuses_numbers_json_cannot_hold(value):
    """NaN and infinities would be written as bare NaN/Infinity, which a Worker's JSON.parse refuses."""
    with pytest.raises(TypeError, match="SERIALIZER 'json'"):
        EntryCodec("json").dumps(value, None, kv_key=KV_KEY, key="k")


@pytest.mark.parametrize("compress", [None, 0])
def test_a_json_entry_keeps_text_as_utf8(compress):
    text = EntryCodec("json", compress).dumps({"name": "Zoë 東京"}, None, kv_key=KV_KEY)
    if compress is None:
        assert "Zoë 東京" in text
    else:
        assert "Zoë 東京".encode() in zlib.decompress(base64.b64decode(json.loads(text)["zlib"]))
    assert decode_entry(text, KV_KEY).value == {"name": "Zoë 東京"}


@pytest.mark.parametrize("bad", [-1, -2, True, 1.5, "1024"])
def test_compress_min_bytes_must_be_a_whole_number_of_bytes(bad):
    with pytest.raises(ValueError, match="COMPRESS_MIN_BYTES"):
        EntryCodec("json", bad)


def test_a_payload_as_long_as_compress_min_bytes_is_compressed():
    payload_length = len(json.dumps("x" * 100))
    assert "zlib" in json.loads(EntryCodec("json", payload_length).dumps("x" * 100, None, kv_key=KV_KEY))
    assert "zlib" not in json.loads(EntryCodec("json", payload_length + 1).dumps("x" * 100, None, kv_key=KV_KEY))


def test_tools_read_an_unsigned_json_entry_a_worker_wrote():
    assert decode_entry(planted(value=[1, 2]), KV_KEY).value == [1, 2]


@pytest.mark.parametrize("fmt", ["pickle2", "zzz", "PICKLE", None])
def test_a_compressed_pickle_under_another_format_name_is_never_unpickled(tmp_path, fmt):
    """Only format "json" is read without a signature; any other name is refused, never unpickled."""
    trap = tmp_path / "pwned"
    payload = base64.b64encode(zlib.compress(pickle.dumps(Trap(trap)))).decode()
    fields = {"zlib": payload} if fmt is None else {"zlib": payload, "format": fmt}
    with pytest.raises(ValueError):
        decode_entry(planted(**fields), KV_KEY)
    for serializer in ("json", "pickle"):
        with pytest.raises(ValueError):
            EntryCodec(serializer).loads(planted(**fields), KV_KEY)
    assert not trap.exists()


@pytest.mark.parametrize("fields", [
    {"zlib": 123, "format": "json"},  # not text
    {"zlib": "not base64!", "format": "json"},
    {"zlib": base64.b64encode(b"not zlib data").decode(), "format": "json"},
    {"zlib": base64.b64encode(zlib.compress(b"{not json")).decode(), "format": "json"},
])
def test_a_corrupt_compressed_entry_is_a_value_error(fields):
    with pytest.raises(ValueError) as raised:
        decode_entry(planted(**fields), KV_KEY)
    assert not isinstance(raised.value, SignatureError)

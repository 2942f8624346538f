"""The cache from the side of someone who can write the namespace but does not hold SECRET_KEY.

Whoever holds a KV write token (or a Worker bound to the namespace) can put any
bytes under any cache key. A pickled value runs code when it is loaded, so no
bytes read from KV may reach pickle.loads unless they carry a signature made
with the site's secret for that very KV key. Each test plants a pickle whose
unpickling would create a file, and checks that the file never appears.
"""

import base64
import io
import json
import logging
import pathlib
import pickle
import time
import zlib

import pytest
from django.core.management import call_command

from django_cfkv import get_kv, inspect, maintenance
from django_cfkv.cache import CloudflareKVCache, codec, decode_entry
from django_cfkv.cache.codec import SignatureError, sign
from django_cfkv.exceptions import KVValueError

SECURITY_LOGGER = "django.security.SuspiciousCacheEntry"


class Trap:
    """A pickle that creates ``path`` when it is loaded (what an attacker's payload would do)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture
def trap(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a planted pickle was unpickled"


def build_cache(**params):
    return CloudflareKVCache("default", params)


def pickle_entry(value, *, compressed=False, sig=None):
    """Return entry text as an attacker writes it: the stored format, unsigned or with a made-up signature."""
    payload = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    if compressed:
        text = json.dumps({"expires": None, "zlib": base64.b64encode(zlib.compress(payload)).decode(),
                           "format": "pickle"}, separators=(",", ":"))
    else:
        text = json.dumps({"expires": None, "pickle": base64.b64encode(payload).decode()}, separators=(",", ":"))
    return text if sig is None else f'{text[:-1]},"sig":"{sig}"}}'


def plant(kv_key, text, *, metadata):
    get_kv().put(kv_key, text, metadata={"kind": "cache"} if metadata else None)


FORMS = {
    "unsigned": {},
    "unsigned-compressed": {"compressed": True},
    "forged-signature": {"sig": "A" * 43},
    "forged-signature-compressed": {"compressed": True, "sig": "A" * 43},
}


@pytest.mark.parametrize("metadata", [True, False], ids=["metadata", "no-metadata"])
@pytest.mark.parametrize("form", list(FORMS))
def test_a_planted_pickle_is_a_logged_miss_on_every_read_path(backend, trap, form, metadata, caplog):
    cache = build_cache(KEY_PREFIX="site")
    text = pickle_entry(Trap(trap), **FORMS[form])
    cache.set("neighbour", "fine")
    for key in ("k", "n", "t", "g", "s"):
        plant(cache.kv_key(key), text, metadata=metadata)
    with caplog.at_level(logging.WARNING, logger=SECURITY_LOGGER):
        assert cache.get("k", "miss") == "miss"
        assert cache.get_many(["k", "neighbour", "absent"]) == {"neighbour": "fine"}  # one bulk read
        with pytest.raises(ValueError, match="not found"):
            cache.incr("n")
        assert cache.touch("t", 300) is False
        assert cache.get_or_set("g", lambda: "computed") == "computed"  # stampede-protected path
        assert cache.add("s", "added") is True
    assert cache.get("g") == "computed" and cache.get("s") == "added"
    refusals = [r for r in caplog.records if r.name == SECURITY_LOGGER]
    assert len(refusals) >= 6
    for record in refusals:
        message = record.getMessage()
        assert "alias 'default'" in message and "KEY_PREFIX 'site'" in message
        assert "site:1:" not in message and text[20:60] not in message  # neither the key nor the value


def test_a_planted_pickle_never_reaches_a_near_cache_reader(backend, trap):
    cache = build_cache(OPTIONS={"NEAR_CACHE_TIMEOUT": 30})
    plant(cache.kv_key("k"), pickle_entry(Trap(trap)), metadata=True)
    for _ in range(3):  # the first read fills the near cache with the raw bytes; later hits decode them again
        assert cache.get("k") is None
        assert cache.get_many(["k"]) == {}


def test_ttl_and_has_key_read_metadata_only(backend, trap):
    cache = build_cache()
    plant(cache.kv_key("k"), pickle_entry(Trap(trap)), metadata=True)
    # Metadata is not signed: a writer can make ttl() and has_key() lie, but they never load the value.
    assert cache.ttl("k") is None and cache.has_key("k") is True


def test_a_signed_entry_moved_to_another_key_is_refused(backend, trap, caplog):
    cache = build_cache()
    cache.set("price", 10)
    get_kv().put(cache.kv_key("other"), get_kv().get(cache.kv_key("price")), metadata={"kind": "cache"})
    # Even a pickle signed with the real secret, but for another key, is never loaded there.
    get_kv().put(cache.kv_key("victim"), sign(pickle_entry(Trap(trap)), cache.kv_key("bait")))
    with caplog.at_level(logging.WARNING, logger=SECURITY_LOGGER):
        assert cache.get("other") is None and cache.get("victim") is None
        assert cache.get_many(["other", "victim", "price"]) == {"price": 10}
    assert sum(r.name == SECURITY_LOGGER for r in caplog.records) == 4


def test_a_pickle_cache_reads_only_signed_entries(backend, caplog):
    cache = build_cache()
    worker_style = json.dumps({"expires": None, "value": "<script>steal()</script>"})
    plant(cache.kv_key("fragment"), worker_style, metadata=True)
    with caplog.at_level(logging.WARNING, logger=SECURITY_LOGGER):
        assert cache.get("fragment") is None  # a pickle cache never holds unsigned JSON
    assert any(r.name == SECURITY_LOGGER for r in caplog.records)


def test_a_json_cache_reads_unsigned_json_and_never_unsigned_pickles(backend, trap):
    cache = build_cache(OPTIONS={"SERIALIZER": "json"})
    cache.set("mine", {"n": 1}, None)
    assert json.loads(get_kv().get(cache.kv_key("mine"))) == {"expires": None, "value": {"n": 1}}  # no "sig"
    plant(cache.kv_key("worker"), json.dumps({"expires": None, "value": [1, 2]}), metadata=False)
    plant(cache.kv_key("trap"), pickle_entry(Trap(trap), compressed=True), metadata=True)
    assert cache.get_many(["mine", "worker", "trap"]) == {"mine": {"n": 1}, "worker": [1, 2]}


def test_entries_survive_secret_rotation_with_fallbacks(backend, settings):
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "old-secret", []
    cache = build_cache()
    cache.set_many({"a": {"x": 1}, "b": [2], "c": 3})
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-secret", ["old-secret"]
    assert cache.get_many(["a", "b", "c"]) == {"a": {"x": 1}, "b": [2], "c": 3}
    assert cache.touch("a", 300) is True  # rewritten, so signed with the new secret
    assert cache.incr("c") == 4
    settings.SECRET_KEY_FALLBACKS = []  # the old secret is retired
    assert cache.get_many(["a", "b", "c"]) == {"a": {"x": 1}, "c": 4}  # "b" was never rewritten: a miss


def test_entries_written_without_a_signature_read_as_misses(backend):
    """What the previous release stored (an unsigned pickle) is a miss after the upgrade, then rewritten."""
    cache = build_cache()
    plant(cache.kv_key("old"), pickle_entry({"cached": "before the upgrade"}), metadata=True)
    assert cache.get("old") is None
    assert cache.get_or_set("old", lambda: "recomputed") == "recomputed"
    assert cache.get("old") == "recomputed"


def test_decode_entry_returns_value_and_exact_expiry_of_entries_signed_for_their_key(backend, trap):
    cache = build_cache()
    cache.set("k", [1, "two"], 30)
    raw = get_kv().get(cache.kv_key("k"))
    entry = decode_entry(raw, cache.kv_key("k"))
    assert entry.value == [1, "two"]
    assert time.time() < entry.expires <= time.time() + 30
    value, expires = entry  # (value, expires), as manage.py cfkv uses it
    assert (value, expires) == (entry.value, entry.expires)
    with pytest.raises(ValueError, match="Not a cache entry"):
        decode_entry(b"plain text", "k")
    with pytest.raises(SignatureError):
        decode_entry(raw, cache.kv_key("elsewhere"))
    with pytest.raises(SignatureError):
        decode_entry(pickle_entry(Trap(trap)), cache.kv_key("k"))


def test_cfkv_get_and_inspect_show_a_planted_pickle_as_text(backend, trap, caplog):
    cache = build_cache()
    cache.set("good", {"n": 42})
    key = cache.kv_key("bad")
    plant(key, pickle_entry(Trap(trap), compressed=True), metadata=True)
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger=SECURITY_LOGGER):
        call_command("cfkv", "get", key, "--json", stdout=out, stderr=io.StringIO())
    data = json.loads(out.getvalue())
    assert data["kind"] == "cache" and data["decoder"] == "generic" and data["value"]["format"] == "pickle"
    assert any(r.name == SECURITY_LOGGER for r in caplog.records)
    assert inspect.decode(cache.kv_key("good"), get_kv().get(cache.kv_key("good")), {"kind": "cache"})["value"] \
        == {"n": 42}


def test_sweep_deletes_planted_entries_without_reading_them(backend, trap):
    cache = build_cache()
    get_kv().put(cache.kv_key("expired"), pickle_entry(Trap(trap)), expiration_ttl=3600,
                 metadata={"kind": "cache", "expires": 1})
    report = maintenance.sweep(get_kv(), ["cache"])
    assert report["deleted"] == 1 and report["values_read"] == 0


def _zlib_bomb(inflated_mib):
    """Return the zlib of ``inflated_mib`` MiB of zeros (about 1 KB per MiB), made without holding them."""
    deflater, chunk = zlib.compressobj(9), bytes(1 << 20)
    return b"".join(deflater.compress(chunk) for _ in range(inflated_mib)) + deflater.flush()


def test_a_planted_zlib_bomb_is_a_miss_without_inflating_it(backend, caplog, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(codec, "MAX_INFLATED_BYTES", 1 << 20)  # 100 MiB in use: 1 MiB keeps the test light
    cache = build_cache(OPTIONS={"SERIALIZER": "json"})  # JSON entries are unsigned: anyone may write one
    bomb = _zlib_bomb(64)
    assert len(bomb) < 100_000
    plant(cache.kv_key("bomb"), json.dumps({"expires": None, "zlib": base64.b64encode(bomb).decode(),
                                            "format": "json"}), metadata=True)
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="django_cfkv.cache"):
            assert cache.get("bomb") is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # about MAX_INFLATED_BYTES is ever inflated, never the 64 MiB planted
    assert "inflates past 1048576 bytes" in caplog.text


def test_compressed_values_up_to_the_inflated_limit_round_trip(backend, monkeypatch):
    monkeypatch.setattr(codec, "MAX_INFLATED_BYTES", 1 << 20)
    cache = build_cache(OPTIONS={"COMPRESS_MIN_BYTES": 0})
    cache.set("fits", "x" * ((1 << 20) - 100))
    assert cache.get("fits") == "x" * ((1 << 20) - 100)
    with pytest.raises(KVValueError, match="at most 1048576 bytes .* once inflated"):
        cache.set("too_big", "x" * (2 << 20))


def test_the_codec_keeps_its_earlier_import_path():
    from django_cfkv import serializers

    assert (serializers.decode_entry, serializers.SignatureError, serializers.sign) == \
        (decode_entry, SignatureError, sign)


NESTED = "[" * 100_000 + "]" * 100_000  # json.loads() raises RecursionError, not ValueError, on it


@pytest.mark.parametrize("serializer", ["pickle", "json"])
@pytest.mark.parametrize("text", [NESTED, '{"expires": "soon", "value": 1}',
                                  '{"expires": 1' + "0" * 400 + ', "value": 1}',
                                  '{"expires": null, "delta": "x", "value": 1}'],
                         ids=["nested", "expires-text", "expires-huge", "delta-text"])
def test_a_planted_entry_of_deep_json_or_wordy_times_is_a_miss_on_every_read_path(backend, serializer, text):
    """A namespace writer's JSON: as garbage, never a RecursionError, TypeError or OverflowError (a 500)."""
    cache = build_cache(OPTIONS={"SERIALIZER": serializer})
    cache.set("neighbour", "fine")
    for key in ("k", "n", "t", "g"):
        plant(cache.kv_key(key), text, metadata=True)
    assert cache.get("k", "miss") == "miss"
    assert cache.get_many(["k", "neighbour"]) == {"neighbour": "fine"}
    with pytest.raises(ValueError, match="not found"):
        cache.incr("n")
    assert cache.touch("t", 300) is False and cache.get_or_set("g", lambda: "computed") == "computed"


def test_a_planted_compressed_entry_of_deep_json_is_a_miss(backend):
    """The JSON serializer's entries are unsigned, so anyone who writes the namespace may plant a compressed one
    whose inflated JSON is nested past the recursion limit: a miss, never a RecursionError (a 500)."""
    cache = build_cache(OPTIONS={"SERIALIZER": "json"})
    payload = base64.b64encode(zlib.compress(NESTED.encode())).decode()
    plant(cache.kv_key("z"), json.dumps({"expires": None, "zlib": payload, "format": "json"}), metadata=True)
    assert cache.get("z", "miss") == "miss" and cache.get_many(["z"]) == {}

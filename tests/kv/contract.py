"""The KV interface's contract, shared by every implementation (LocalKV, KVClient + emulator,
KVClient + gateway). A test module binds it to a ``kv`` fixture."""

import time

import pytest

from django_cfkv.exceptions import KVError, KVValueError

UNICODE_KEYS = ["a/b", "x?y=1&z", "#frag", "100%", "sp ace", "..x", "é-ü-漢字", "tab\tkey", "a%2Fb", "/lead", "trail/"]


class KVContract:
    def test_get_missing_is_none(self, kv):
        assert kv.get("nope") is None
        assert kv.get_with_metadata("nope") is None

    def test_put_get_bytes_and_text(self, kv):
        kv.put("bin", b"\x00\xff\x10")
        kv.put("text", "héllo")
        assert kv.get("bin") == b"\x00\xff\x10"
        assert kv.get("text") == "héllo".encode()

    def test_overwrite_replaces_value_and_metadata(self, kv):
        kv.put("k", b"one", metadata={"v": 1})
        kv.put("k", b"two")
        entry = kv.get_with_metadata("k")
        assert entry.value == b"two"
        assert entry.metadata is None

    def test_metadata_round_trip(self, kv):
        kv.put("k", b"v", metadata={"e": 123.5, "kind": "cache", "list": [1, "x"]})
        entry = kv.get_with_metadata("k")
        assert entry.value == b"v" and entry.metadata == {"e": 123.5, "kind": "cache", "list": [1, "x"]}
        assert kv.get_metadata("k") == {"e": 123.5, "kind": "cache", "list": [1, "x"]}

    @pytest.mark.parametrize("key", UNICODE_KEYS)
    def test_awkward_keys_round_trip(self, kv, key):
        kv.put(key, key.encode())
        assert kv.get(key) == key.encode()
        assert [k.name for k in kv.iter_keys(prefix=key)] == [key]
        kv.delete(key)
        assert kv.get(key) is None

    def test_expiration_ttl_is_reported_as_absolute(self, kv):
        before = int(time.time())
        kv.put("k", b"v", expiration_ttl=120)
        entry = kv.get_with_metadata("k")
        if entry.expiration is not None:  # the gateway cannot read expiry on get
            assert before + 119 <= entry.expiration <= int(time.time()) + 121
        [info] = list(kv.iter_keys(prefix="k"))
        assert before + 119 <= info.expiration <= int(time.time()) + 121

    def test_absolute_expiration(self, kv):
        at = int(time.time()) + 3600
        kv.put("k", b"v", expiration=at)
        [info] = list(kv.iter_keys())
        assert info.expiration == at

    def test_no_expiry_is_none_in_listing(self, kv):
        kv.put("k", b"v")
        [info] = list(kv.iter_keys())
        assert info.expiration is None and info.metadata is None

    @pytest.mark.parametrize("bad", [{"expiration_ttl": 59}, {"expiration_ttl": 0},
                                     {"expiration": 1}, {"expiration": time.time() + 30}])
    def test_expiry_too_soon_is_refused(self, kv, bad):
        with pytest.raises(KVValueError, match="60"):
            kv.put("k", b"v", **bad)
        assert kv.get("k") is None

    @pytest.mark.parametrize("key", ["", ".", "..", "x" * 513, "é" * 257])
    def test_bad_keys_refused_before_io(self, kv, key):
        with pytest.raises(KVValueError):
            kv.put(key, b"v")
        with pytest.raises(KVValueError):
            kv.get(key)
        with pytest.raises(KVValueError):
            kv.delete(key)

    def test_key_of_exactly_512_bytes(self, kv):
        key = "é" * 256
        kv.put(key, b"v")
        assert kv.get(key) == b"v"

    def test_oversized_metadata_refused(self, kv):
        with pytest.raises(KVValueError, match="1024"):
            kv.put("k", b"v", metadata={"x": "y" * 1100})
        assert kv.get("k") is None

    def test_oversized_value_refused(self, kv):
        with pytest.raises(KVValueError, match="25 MiB"):
            kv.put("k", b"x" * (25 * 1024 * 1024 + 1))

    def test_delete_missing_is_fine(self, kv):
        kv.delete("never-there")

    def test_get_many_returns_found_only(self, kv):
        kv.put_many([{"key": f"k{i}", "value": f"v{i}"} for i in range(150)])
        found = kv.get_many([f"k{i}" for i in range(150)] + ["missing"])
        assert found == {f"k{i}": f"v{i}".encode() for i in range(150)}

    def test_get_many_refuses_binary_values(self, kv):
        kv.put("bin", b"\xff\xfe")
        with pytest.raises(KVError):
            kv.get_many(["bin"])

    def test_put_many_binary_and_metadata(self, kv):
        kv.put_many([
            {"key": "a", "value": b"\xff\x00", "metadata": {"m": 1}},
            {"key": "b", "value": "text", "expiration_ttl": 300},
        ])
        assert kv.get("a") == b"\xff\x00"
        assert kv.get_with_metadata("a").metadata == {"m": 1}
        [info] = list(kv.iter_keys(prefix="b"))
        assert info.expiration is not None

    def test_put_many_validates_everything_first(self, kv):
        with pytest.raises(KVValueError):
            kv.put_many([{"key": "good", "value": "v"}, {"key": "..", "value": "v"}])
        assert kv.get("good") is None

    def test_delete_many(self, kv):
        kv.put_many([{"key": f"d{i}", "value": "v"} for i in range(30)])
        kv.delete_many([f"d{i}" for i in range(20)] + ["missing"])
        assert sorted(k.name for k in kv.iter_keys()) == sorted(f"d{i}" for i in range(20, 30))

    def test_list_order_is_utf8_bytes(self, kv):
        names = ["b", "a", "\U0001f600", "é", "Z", "a/b", "ab"]
        kv.put_many([{"key": n, "value": "v"} for n in names])
        listed = [k.name for k in kv.iter_keys()]
        assert listed == sorted(names, key=lambda s: s.encode("utf-8"))

    def test_list_paging_with_cursor(self, kv):
        kv.put_many([{"key": f"p{i:03}", "value": "v", "metadata": {"i": i}} for i in range(25)])
        kv.put("other", b"v")
        page = kv.list_keys(prefix="p", limit=10)
        assert [k.name for k in page.keys] == [f"p{i:03}" for i in range(10)]
        assert page.keys[3].metadata == {"i": 3}
        assert page.cursor
        page2 = kv.list_keys(prefix="p", limit=10, cursor=page.cursor)
        page3 = kv.list_keys(prefix="p", limit=10, cursor=page2.cursor)
        assert [k.name for k in page3.keys] == [f"p{i:03}" for i in range(20, 25)]
        assert page3.cursor is None

    def test_list_limit_bounds(self, kv):
        for limit in (9, 1001):
            with pytest.raises(KVValueError):
                kv.list_keys(limit=limit)

    def test_iter_keys_over_many_pages(self, kv):
        kv.put_many([{"key": f"n{i:05}", "value": "v"} for i in range(2345)])
        assert sum(1 for _ in kv.iter_keys(prefix="n")) == 2345

"""What a stored value carries (kind, exact expiry, size), written and read in one place."""

import json

import pytest

from django_cfkv import clock as cfkv_clock
from django_cfkv import get_kv, metadata
from django_cfkv.sessions import SessionStore


def test_kv_ttl_rounds_up_and_never_goes_below_kvs_minimum():
    assert metadata.kv_ttl(1000.0 + 3600.2, 1000.0) == 3601  # never cut short of the exact expiry
    assert metadata.kv_ttl(1000.0 + 3600.0, 1000.0) == 3600
    assert metadata.kv_ttl(1000.0 + 1, 1000.0) == 60  # KV refuses less; readers check the exact expiry
    assert metadata.kv_ttl(1000.0 - 5, 1000.0) == 60


def test_exact_expiry_is_cut_to_milliseconds_rounding_down():
    assert metadata.exact(1767225600.2509) == 1767225600.25
    assert metadata.exact(1767225600.0006) == 1767225600.0  # round() would say .001: a millisecond too late
    assert metadata.exact(1767225660) == 1767225660 and isinstance(metadata.exact(1767225660), int)
    assert metadata.exact(None) is None


def test_build_orders_fields_and_leaves_out_what_is_unknown():
    assert metadata.build("cache") == {"kind": "cache"}
    meta = metadata.build("ratelimit", expires=120, count=3, limit=5, size=1)
    assert list(meta) == ["kind", "expires", "count", "limit", "size"] and meta["expires"] == 120


@pytest.mark.parametrize("raw, expected", [
    (None, (None, None, None)),
    ("not a dict", (None, None, None)),
    ({"kind": "session", "expires": 12.5, "size": 3}, ("session", 12.5, 3)),
    ({"kind": 7, "expires": True, "size": -1}, (None, None, None)),  # a Worker or a person may write anything
    ({"kind": "cache", "expires": "soon", "size": 2.5}, ("cache", None, None)),
    ({"expires": float("nan")}, (None, None, None)),
])
def test_read_takes_only_well_formed_fields(raw, expected):
    assert tuple(metadata.read(raw)[:3]) == expected


def test_read_says_whether_a_value_is_live():
    assert metadata.read({"expires": 10}).is_live(9.9) and not metadata.read({"expires": 10}).is_live(10)
    assert metadata.read({"kind": "cache"}).is_live(1e12)  # no exact expiry: live until KV drops it


def test_a_sessions_metadata_expiry_is_the_one_its_value_carries(settings, tmp_path, monkeypatch):
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}
    settings.SESSION_CFKV_FORMAT = "json"
    settings.SESSION_COOKIE_AGE = 3600
    monkeypatch.setattr(cfkv_clock, "now", lambda: 1_800_000_000.0006)  # a fraction where round() != floor()
    session = SessionStore()
    session["n"] = 1
    session.save()
    stored = get_kv().get_with_metadata(SessionStore.kv_key(session.session_key))
    value = json.loads(stored.value)
    assert stored.metadata["kind"] == "session"
    assert stored.metadata["expires"] * 1000 == value["expiresAt"] == 1_800_003_600_000
    assert stored.metadata["size"] == len(stored.value)

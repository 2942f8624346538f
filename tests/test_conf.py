import pytest
from django.core.management import call_command
from django.test import override_settings

from django_cfkv import conf, get_kv
from django_cfkv.checks import check_cfkv_setting
from django_cfkv.client import KVClient
from django_cfkv.exceptions import CFKVConfigurationError
from django_cfkv.local import LocalKV


def ids(errors):
    return sorted(e.id for e in errors)


def test_local_alias(tmp_path):
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "x.sqlite3")}}):
        kv = get_kv()
        assert isinstance(kv, LocalKV) and get_kv() is kv


def test_cloudflare_alias_from_environment(monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acc")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "secret-token")
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9/client/v4")
    monkeypatch.setenv("CFKV_NAMESPACE_ID", "ns")
    with override_settings(CFKV={"default": {}, "other": {"NAMESPACE_ID": "ns2"}}):
        kv = get_kv()
        assert isinstance(kv, KVClient)
        assert (kv.account_id, kv.namespace_id, kv.base_url) == ("acc", "ns", "http://127.0.0.1:9/client/v4")
        assert get_kv("other").namespace_id == "ns2"
        assert "secret-token" not in repr(kv)


def test_missing_credentials_say_what_to_set(monkeypatch):
    for name in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "CFKV_NAMESPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    with override_settings(CFKV={"default": {"ACCOUNT_ID": "a"}}):
        with pytest.raises(CFKVConfigurationError, match=r"NAMESPACE_ID \(or \$CFKV_NAMESPACE_ID\)"):
            get_kv()
        assert ids(check_cfkv_setting()) == ["django_cfkv.E002", "django_cfkv.E002"]


def test_unknown_alias():
    with pytest.raises(CFKVConfigurationError, match="'nope' is not configured"):
        get_kv("nope")


def test_settings_changes_take_effect(tmp_path):
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "a.sqlite3")}}):
        first = get_kv()
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "b.sqlite3")}}):
        assert get_kv() is not first and get_kv().path.endswith("b.sqlite3")


def test_dotted_backend(tmp_path):
    with override_settings(CFKV={"default": {"BACKEND": "django_cfkv.local.LocalKV",
                                             "OPTIONS": {"path": str(tmp_path / "d.sqlite3")}}}):
        assert isinstance(get_kv(), LocalKV)


@pytest.mark.parametrize("alias, expected", [
    ({"BACKEND": "cloudflare", "ACCOUNT_ID": "a", "API_TOKEN": "t", "NAMESPACE_ID": "n",
      "BASE_URL": "http://kv.example.com/client/v4"}, ["django_cfkv.W001"]),
    ({"BACKEND": "cloudflare", "ACCOUNT_ID": "a", "API_TOKEN": "t", "NAMESPACE_ID": "n",
      "BASE_URL": "not a url"}, ["django_cfkv.E003"]),
    ({"BACKEND": "local", "PATH": "/no/such/dir/kv.sqlite3"}, ["django_cfkv.E004"]),
    ({"BACKEND": "redis"}, ["django_cfkv.E005"]),
    ({"BACKEND": "local", "TIMEOUT": 0}, ["django_cfkv.E006"]),
    ({"BACKEND": "local", "MAX_RETRIES": -1}, ["django_cfkv.E007"]),
    ({"BACKEND": "local", "TIMEOUT": (3, 10), "MAX_RETRIES": 0}, []),
])
def test_checks(alias, expected, tmp_path):
    with override_settings(CFKV={"default": alias}, BASE_DIR=tmp_path):
        assert ids(check_cfkv_setting()) == expected


def test_cfkv_must_be_a_dict():
    with override_settings(CFKV=["nope"]):
        assert ids(check_cfkv_setting()) == ["django_cfkv.E001"]


def test_check_command_reports_errors(monkeypatch):
    for name in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "CFKV_NAMESPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    from django.core.management.base import SystemCheckError

    with override_settings(CFKV={"default": {"BACKEND": "cloudflare"}}):
        with pytest.raises(SystemCheckError, match="django_cfkv.E002"):
            call_command("check")
    conf.reset()


def test_token_no_header_can_carry_is_a_check_error():
    with override_settings(CFKV={"default": {"ACCOUNT_ID": "a", "NAMESPACE_ID": "n", "API_TOKEN": "abc def"}}):
        assert ids(check_cfkv_setting()) == ["django_cfkv.E008"]


# One home for each convention


def test_conf_is_the_only_reader_of_settings():
    """No module but conf imports django.conf's settings: every other one asks conf."""
    import ast
    from pathlib import Path

    import django_cfkv

    root = Path(django_cfkv.__file__).parent
    readers = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(name and (name == "django.conf" or name.startswith("django.conf.")) for name in names):
                readers.append(str(path.relative_to(root)))
    assert readers == ["conf.py"]


def test_configuration_errors_carry_their_check_id_and_hint():
    from django_cfkv import ratelimit

    assert ratelimit.ConfigProblem is CFKVConfigurationError
    with pytest.raises(CFKVConfigurationError) as caught:
        ratelimit.parse_rate("5 per minute")
    assert caught.value.id == "django_cfkv.E104" and "5/m" in caught.value.hint
    assert str(caught.value) == "Invalid rate '5 per minute'."  # the hint travels beside the text, not in it
    with override_settings(CFKV=["not", "a", "dict"]):
        errors = check_cfkv_setting()
    assert [(e.id, e.hint) for e in errors] == [("django_cfkv.E001", "CFKV = {'default': {'BACKEND': 'local'}}")]


def test_unknown_setting_names_are_refused():
    with pytest.raises(KeyError, match="not a setting django-cfkv reads"):
        conf.setting("SESSION_CFKV_TYPO")


def test_one_reset_registry_runs_on_matching_settings_and_closes_clients_last(tmp_path):
    seen = []
    kv = None

    def forget():
        # Clients are closed after every registered reset: one may still flush through its own.
        seen.append(("forget", kv in conf._instances.values()))

    conf.on_reset(forget, settings=("CFKV", "CFKV_TEST_*"))
    try:
        with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}):
            kv = get_kv()
        assert seen == [("forget", False), ("forget", True)]  # entering (nothing built yet), then leaving
        assert kv not in conf._instances.values()
        seen.clear()
        with override_settings(CFKV_TEST_FLAG=True, CFKV_TESTING=True, SESSION_ENGINE="x"):
            pass
        assert len(seen) == 2  # CFKV_TEST_FLAG on entering and leaving; CFKV_TESTING and SESSION_ENGINE do not match
    finally:
        conf._on_settings[:] = [(cb, names) for cb, names in conf._on_settings if cb is not forget]

"""LocalKV as a store: django-cfkv's cache and sessions on the embedded store,
against Django's DatabaseCache and db sessions on SQLite, and django-redis on
a local redis-server (started by the bench). Figures are ops/s; each ratio is
against Django's database backend measured in the same run.
"""

import contextlib
import importlib.util
import shutil
import subprocess
import time

from django.conf import settings
from django.core.cache import caches
from django.core.management import call_command
from django.test import override_settings

from .common import free_port, row, smoke_env


@contextlib.contextmanager
def redis_server():
    """A throwaway redis-server on a free loopback port, or None when it, redis-py or
    django-redis is not installed (they are bench-only: requirements-dev.txt)."""
    binary = shutil.which("redis-server")
    if binary is None or not all(importlib.util.find_spec(m) for m in ("redis", "django_redis")):
        yield None
        return
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def run(smoke=False):
    n = 30 if smoke or smoke_env() else 2000
    data = settings.DATA_DIR
    with redis_server() as redis_url:
        caches_conf = {
            "cfkv": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default"},
            "db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "bench_cache"},
        }
        if redis_url:
            caches_conf["redis"] = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url}
        with override_settings(CACHES={"default": caches_conf["db"], **caches_conf},
                               CFKV={"default": {"BACKEND": "local", "PATH": str(data / "store.sqlite3")}}):
            call_command("migrate", verbosity=0, run_syncdb=True)
            call_command("createcachetable", verbosity=0)
            rows = _caches(list(caches_conf), n) + _sessions(n)
    if not redis_url:
        rows.append(row("store", "django-redis", 0, "ops/s",
                        note="redis-server, redis or django-redis not installed: not measured"))
    return rows


def _caches(names, n):
    results = {}
    for name in names:
        cache = caches[name]
        value = {"user": 42, "items": list(range(20))}
        started = time.perf_counter()
        for i in range(n):
            cache.set(f"k{i}", value, 300)
            cache.get(f"k{i}")
        results[name] = 2 * n / (time.perf_counter() - started)
    return [row("store", f"cache set+get: {name}", ops, "ops/s", baseline="DatabaseCache (SQLite)",
                baseline_value=results["db"]) for name, ops in results.items()]


def _sessions(n):
    from importlib import import_module

    results = {}
    for label, engine in (("cfkv sessions on LocalKV", "django_cfkv.sessions"),
                          ("db sessions (SQLite)", "django.contrib.sessions.backends.db")):
        store_class = import_module(engine).SessionStore
        started = time.perf_counter()
        for i in range(n):
            session = store_class()
            session["user"] = i
            session.save()
            loaded = store_class(session.session_key)
            assert loaded["user"] == i
        results[label] = 2 * n / (time.perf_counter() - started)
    base = results["db sessions (SQLite)"]
    return [row("store", f"session save+load: {label}", ops, "ops/s", baseline="db sessions (SQLite)",
                baseline_value=base) for label, ops in results.items()]

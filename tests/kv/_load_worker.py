"""One load process: 8 threads on the cache and sessions against an emulator.

Run as ``python -m tests.kv._load_worker BASE_URL NAMESPACE TOKEN SECONDS``;
prints one JSON line of results. Every value written checks itself (a sha256
of its payload travels with it), so any torn or mixed-up value is caught.
"""

import gc
import hashlib
import json
import os
import random
import sys
import threading
import time

import django

THREADS = 8
SHARED_KEYS = 6


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _make(owner, i):
    payload = f"{owner}:{i}:" + "x" * random.randint(0, 3000)
    return {"payload": payload, "sha": hashlib.sha256(payload.encode()).hexdigest()}


def _intact(value):
    return (isinstance(value, dict) and value.get("sha") == hashlib.sha256(value["payload"].encode()).hexdigest())


def main(base_url, namespace, token, seconds):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from django.test.utils import override_settings

    alias = {"BACKEND": "cloudflare", "ACCOUNT_ID": "0" * 32, "NAMESPACE_ID": namespace, "API_TOKEN": token,
             "BASE_URL": base_url, "MAX_RETRIES": 2, "TIMEOUT": 10}
    override_settings(CFKV={"default": alias}, SESSION_ENGINE="django_cfkv.sessions").enable()

    from django_cfkv import conf, get_kv
    from django_cfkv.cache import CloudflareKVCache
    from django_cfkv.sessions import SessionStore
    from django_cfkv.testing import connections_opened

    fds_before = _fds()
    cache = CloudflareKVCache("default", {})
    pid = os.getpid()
    deadline = time.monotonic() + seconds
    results = {"ops": 0, "errors": [], "corrupt": [], "acked_cache": {}, "acked_sessions": {}}
    lock = threading.Lock()

    def note(kind, detail):
        with lock:
            results[kind].append(detail)

    def worker(tid):
        owner, i = f"{pid}-{tid}", 0
        mine_cache, mine_sessions = {}, {}
        while time.monotonic() < deadline:
            i += 1
            try:
                # Own key: write, read back.
                key, value = f"own:{owner}:{i % 20}", _make(owner, i)
                cache.set(key, value, 300)
                mine_cache[key] = value["sha"]
                got = cache.get(key)
                if got is None or not _intact(got) or got["sha"] != value["sha"]:
                    note("corrupt", f"own cache key {key} read back {str(got)[:80]}")
                # Shared keys: everyone writes, everyone reads; last write wins, never a torn value.
                shared = f"shared:{random.randrange(SHARED_KEYS)}"
                cache.set(shared, _make(owner, i), 300)
                for k, v in cache.get_many([f"shared:{j}" for j in range(SHARED_KEYS)]).items():
                    if not _intact(v):
                        note("corrupt", f"shared cache key {k}")
                # A session: create, load in a fresh store, change, save, load again.
                store = SessionStore()
                store["v"] = _make(owner, i)
                store.save()
                loaded = SessionStore(store.session_key)
                data = loaded.load()
                if not _intact(data.get("v")) or data["v"]["sha"] != store["v"]["sha"]:
                    note("corrupt", f"session {store.session_key} loaded {str(data)[:80]}")
                loaded["v"] = _make(owner, -i)
                loaded.save()
                mine_sessions[store.session_key] = loaded["v"]["sha"]
                with lock:
                    results["ops"] += 6
            except Exception as exc:  # counted, and the test fails on any
                note("errors", f"{type(exc).__name__}: {exc}"[:300])
        # After the load: every acknowledged write is readable as written.
        for key, sha in mine_cache.items():
            got = cache.get(key)
            if got is None or got.get("sha") != sha:
                note("corrupt", f"acked cache key {key} lost or changed")
        for key, sha in mine_sessions.items():
            got = SessionStore(key).load().get("v")
            if got is None or got.get("sha") != sha:
                note("corrupt", f"acked session {key} lost or changed")
        with lock:
            results["acked_cache"].update(mine_cache)
            results["acked_sessions"].update(mine_sessions)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kv = get_kv()
    results["connections_opened"] = connections_opened(kv)
    results["fds_during"] = _fds() - fds_before
    conf.reset()  # closes the pooled connections
    # Closed sockets still referenced from response objects in reference cycles
    # are freed by the collector; what survives it is a leak.
    gc.collect()
    results["fds_after_close"] = _fds() - fds_before
    results["acked_cache"] = len(results["acked_cache"])
    results["acked_sessions"] = len(results["acked_sessions"])
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))

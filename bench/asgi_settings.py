"""Settings of bench_asgi's site (bench/asgi_app.py), served by uvicorn in a child process.

No middleware: the figures are the view's and Django's request handling,
not those of middleware that would run in threads under ASGI. Sessions and
the cache are on the emulator the bench starts (``CFKV_BENCH_BASE_URL``).
"""

import os

SECRET_KEY = "bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
INSTALLED_APPS = ["django_cfkv"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.asgi_app"
DATABASES: dict[str, dict] = {}
CFKV = {"default": {"BACKEND": "cloudflare", "BASE_URL": os.environ.get("CFKV_BENCH_BASE_URL", ""),
                    "ACCOUNT_ID": os.environ.get("CFKV_BENCH_ACCOUNT", ""),
                    "API_TOKEN": os.environ.get("CFKV_BENCH_TOKEN", ""), "NAMESPACE_ID": "bench-asgi"}}
CACHES = {"default": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default"}}
SESSION_ENGINE = "django_cfkv.sessions"
SESSION_CFKV_ALIAS = "default"

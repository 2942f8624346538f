"""Settings for the benchmarks (each bench overrides what it measures)."""

import tempfile
from pathlib import Path

_DATA = Path(tempfile.mkdtemp(prefix="cfkv-bench-"))
SECRET_KEY = "bench-not-secret"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions", "django_cfkv"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(_DATA / "db.sqlite3")}}
CFKV = {"default": {"BACKEND": "local", "PATH": str(_DATA / "kv.sqlite3")}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
DATA_DIR = _DATA

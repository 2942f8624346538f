"""Settings of a project under test: its CFKV aliases point at Cloudflare itself.

The cfkv fixture and override_cfkv() must move every alias to the emulator;
"sessions" shares the default alias' namespace, "limits" is a local store.
The cache, the session engine and the limiter each use one of them.
"""

import tempfile

SECRET_KEY = "plugin-example-not-secret"
USE_TZ = True
INSTALLED_APPS = ["django_cfkv"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

_REAL = {"BACKEND": "cloudflare", "ACCOUNT_ID": "f" * 32, "NAMESPACE_ID": "production-namespace",
         "API_TOKEN": "production-token"}
CFKV = {
    "default": {**_REAL, "MAX_RETRIES": 1},
    "sessions": dict(_REAL),
    "limits": {"BACKEND": "local", "PATH": tempfile.mkdtemp() + "/limits.sqlite3"},
}
CACHES = {"default": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default",
                       "OPTIONS": {"IGNORE_EXCEPTIONS": True}}}
SESSION_ENGINE = "django_cfkv.sessions"
SESSION_CFKV_ALIAS = "sessions"
CFKV_RATELIMIT = {"ALIAS": "limits"}

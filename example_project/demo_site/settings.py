"""Settings for the django-cfkv example site.

Sessions, the cache and rate limits all live in one Workers KV namespace, the
``CFKV["default"]`` alias. Which store backs it comes from the environment:

* nothing set: the embedded LocalKV, a SQLite file in this folder (git-ignored);
* ``CLOUDFLARE_BASE_URL``: an emulator (``make emulator``) or a Worker gateway;
* ``CFKV_NAMESPACE_ID`` with ``CLOUDFLARE_ACCOUNT_ID`` and ``CLOUDFLARE_API_TOKEN``:
  real Cloudflare.

``EXAMPLE_DATA_DIR`` moves the SQLite files elsewhere (the end-to-end tests
use it to run the site on a throwaway copy). ``EXAMPLE_KV_TIMEOUT`` (seconds)
and ``EXAMPLE_KV_MAX_RETRIES`` set the REST client's ``TIMEOUT`` and
``MAX_RETRIES`` (the tests shorten them to run under injected faults quickly).
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("EXAMPLE_DATA_DIR") or BASE_DIR)

# An example site: the fallback key is public, so never deploy it as is.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-cfkv-example-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the one stylesheet (runserver serves it)
    "django_cfkv",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Django's SessionMiddleware, except that under ASGI it awaits the session's save rather
    # than making it in a thread (make run-asgi); under WSGI it does exactly what Django's does.
    "django_cfkv.sessions.middleware.SessionMiddleware",
    # Right after SessionMiddleware: "Authorization: Bearer <token>" selects the session.
    "django_cfkv.middleware.BearerSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication, so "user_or_ip" rules can see the user. In your project:
    # "django_cfkv.middleware.RateLimitMiddleware". The example's subclass also keeps
    # the counts on the request, so that the login form can say how many tries are left.
    "demo.middleware.RateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Users live in the database; their sessions live in KV.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _kv_alias():
    """Return the CFKV alias for the store the environment asks for."""
    base_url = os.environ.get("CLOUDFLARE_BASE_URL")
    if base_url:
        alias = {"BACKEND": "cloudflare"}
        if urlsplit(base_url).hostname in ("127.0.0.1", "localhost", "::1"):
            # A loopback emulator accepts any ids and, unless started with
            # --token, any token: fill in what the environment leaves out.
            for name, env, placeholder in (("ACCOUNT_ID", "CLOUDFLARE_ACCOUNT_ID", "0" * 32),
                                           ("API_TOKEN", "CLOUDFLARE_API_TOKEN", "emulator"),
                                           ("NAMESPACE_ID", "CFKV_NAMESPACE_ID", "example")):
                if not os.environ.get(env):
                    alias[name] = placeholder
        return _with_client_limits(alias)
    if os.environ.get("CFKV_NAMESPACE_ID"):
        # Real Cloudflare; django_cfkv reads CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_API_TOKEN
        # and CFKV_NAMESPACE_ID itself, and `manage.py check` names any that are missing.
        return _with_client_limits({"BACKEND": "cloudflare"})
    return {"BACKEND": "local", "PATH": str(DATA_DIR / "cfkv.sqlite3")}


def _with_client_limits(alias):
    """Add the REST client's TIMEOUT and MAX_RETRIES when the environment sets them."""
    if os.environ.get("EXAMPLE_KV_TIMEOUT"):
        alias["TIMEOUT"] = float(os.environ["EXAMPLE_KV_TIMEOUT"])
    if os.environ.get("EXAMPLE_KV_MAX_RETRIES"):
        alias["MAX_RETRIES"] = int(os.environ["EXAMPLE_KV_MAX_RETRIES"])
    return alias


CFKV = {"default": _kv_alias()}

CACHES = {
    "default": {
        "BACKEND": "django_cfkv.cache.CloudflareKVCache",
        "LOCATION": "default",  # the CFKV alias
        "KEY_PREFIX": "example",
        "TIMEOUT": 300,
        # A cache only saves work: when KV cannot be reached (a connection error, a
        # timeout, a 429 or a 5xx), a read is a miss and a write is dropped, with a
        # warning on the django_cfkv.cache logger, instead of a 500.
        "OPTIONS": {"IGNORE_EXCEPTIONS": True},
    },
}

SESSION_ENGINE = "django_cfkv.sessions"
SESSION_CFKV_ALIAS = "default"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 14

CFKV_RATELIMIT = {
    "ALIAS": "default",
    "RULES": [
        # Password guessing: 5 login attempts a minute per address.
        {"path": r"^/login/$", "methods": ["POST"], "rate": "5/m", "key": "ip", "group": "login"},
        # Tokens are credentials too: the same budget for the token endpoint.
        {"path": r"^/api/token$", "methods": ["POST"], "rate": "5/m", "key": "ip", "group": "token"},
        # A JSON endpoint: 10 calls a minute per signed-in user, else per address.
        {"path": r"^/api/ping$", "rate": "10/m", "key": "user_or_ip", "group": "ping"},
    ],
    # The 429 answer: this site's page (JSON under /api/); Retry-After and
    # RateLimit headers are added by the middleware.
    "VIEW": "demo.views.ratelimited",
}

# Messages ride in a signed cookie: showing one costs no KV write.
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# Seconds the deliberately slow page takes to compute (the tests shorten it).
EXAMPLE_SLOW_SECONDS = float(os.environ.get("EXAMPLE_SLOW_SECONDS", "1.5"))

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_cfkv": {"handlers": ["console"], "level": "INFO"},
        "demo": {"handlers": ["console"], "level": "INFO"},
    },
}

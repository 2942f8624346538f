"""What the rate limiter's tests share: the login rule of tests/ratelimit/urls.py's site, and its requests."""

from django.test import override_settings

LOGIN_RULE = {"path": r"^/login/$", "methods": ["POST"], "rate": "3/h", "key": "ip"}


def limits(**options):
    """CFKV_RATELIMIT with the login rule, and ``options``."""
    return override_settings(CFKV_RATELIMIT={"RULES": [LOGIN_RULE], **options})


def statuses(client, n, path="/login/", method="post", **extra):
    """The status codes of ``n`` requests."""
    return [getattr(client, method)(path, **extra).status_code for _ in range(n)]

"""django_cfkv's RateLimitMiddleware, leaving where a login try stands where the login page can read it."""

import re

from django.conf import settings

from django_cfkv import middleware
from django_cfkv.ratelimit import get_usage

LOGIN_RULE = next(rule for rule in settings.CFKV_RATELIMIT["RULES"] if rule.get("group") == "login")


class RateLimitMiddleware(middleware.RateLimitMiddleware):
    """Count as ``django_cfkv.middleware.RateLimitMiddleware`` does; on a login try it lets through, leave
    where the client stands against the login rule on ``request.ratelimit_usage`` (``get_usage()``: count,
    limit, should_limit, time_left), so that the login form can say how many tries are left in this window.

    ``get_usage()`` without ``increment`` only reads the count the middleware has just made: it costs no
    KV call.
    """

    def process_request(self, request):
        response = super().process_request(request)
        if response is None and request.method in LOGIN_RULE["methods"] and re.search(LOGIN_RULE["path"],
                                                                                      request.path_info):
            request.ratelimit_usage = get_usage(request, group=LOGIN_RULE["group"], key=LOGIN_RULE["key"],
                                                rate=LOGIN_RULE["rate"], method=LOGIN_RULE["methods"])
        return response

"""django_cfkv's RateLimitMiddleware, keeping what it counted where the pages can read it."""

from django_cfkv import middleware


class RateLimitMiddleware(middleware.RateLimitMiddleware):
    """Count as ``django_cfkv.middleware.RateLimitMiddleware`` does, and leave the request's Usages
    (policy, limit, period, count, seconds to reset) on ``request.ratelimit_usages``, so that the
    login form can say how many tries are left in this window."""

    def _check(self, request):
        request.ratelimit_usages = super()._check(request)
        return request.ratelimit_usages

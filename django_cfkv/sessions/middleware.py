"""SessionMiddleware: Django's, whose async path saves the session awaiting KV instead of in a thread.

``MIDDLEWARE = ["django_cfkv.sessions.middleware.SessionMiddleware", ...]`` in place of
``django.contrib.sessions.middleware.SessionMiddleware``. Django's middleware has only sync hooks:
under ASGI, Django runs them in a worker thread (``thread_sensitive``, one per request), so each
session save holds a thread while it waits for KV. This one answers the same
in a sync stack, and in an async stack makes the store on the event loop and awaits the save
(``asave``), so a request whose views and middleware are async uses no thread for its session.
As with Django's, a save once begun is finished even if the client goes away meanwhile (the request is
cancelled then; the cancel is raised when the save is done). Any SESSION_ENGINE works: an engine that
overrides ``save()`` but not ``asave()`` has its ``save()`` run in a thread, as Django's middleware runs
it. Django's own admin check (admin.E410) accepts it as Django's subclass.
"""

from typing import Any

from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.utils.http import http_date

from .. import clock, conf
from . import plans
from .plans import Finished, Plan, Twin


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's SessionMiddleware, answering alike in sync and async stacks; in async ones the session is saved
    awaiting its store (``asave``), never in a thread."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:  # MiddlewareMixin's, with no thread
        self.process_request(request)  # makes the store: no I/O
        response = await self.get_response(request)  # type: ignore[misc]  # an async stack's: a coroutine
        return await self.aprocess_response(request, response)

    def process_response(  # type: ignore[override]  # the stubs say HttpResponse: any response passes through
            self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        """Save the session if it changed (or SESSION_SAVE_EVERY_REQUEST), and set or delete its cookie."""
        return plans.run(self._respond(request, response), _no_kv)

    async def aprocess_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        """Async twin of :meth:`process_response`: the session is read and saved by its async methods."""
        return await plans.arun(self._respond(request, response), _ano_kv)

    def _respond(self, request: HttpRequest, response: HttpResponseBase) -> Plan[HttpResponseBase]:
        """Django's process_response, each call of the session a step (so awaited in an async stack)."""
        try:
            session: Any = request.session
            accessed, modified, empty = session.accessed, session.modified, session.is_empty()
        except AttributeError:
            return response
        name, path, domain, samesite = (conf.setting(f"SESSION_COOKIE_{part}")
                                        for part in ("NAME", "PATH", "DOMAIN", "SAMESITE"))
        if name in request.COOKIES and empty:
            response.delete_cookie(name, path=path, domain=domain, samesite=samesite)
            need_vary_cookie = True
        else:
            # A session accessed must be varied on, whether or not it is saved.
            need_vary_cookie = accessed
            if (modified or conf.setting("SESSION_SAVE_EVERY_REQUEST")) and not empty:
                if (yield Twin(session.get_expire_at_browser_close, session.aget_expire_at_browser_close)):
                    max_age, expires = None, None
                else:
                    max_age = yield Twin(session.get_expiry_age, session.aget_expiry_age)
                    expires = http_date(clock.now() + max_age)
                if response.status_code < 500:  # a 5xx does not save the session
                    try:
                        yield Finished(session.save, session.asave)  # a client gone still has it saved
                    except UpdateError:
                        raise SessionInterrupted(
                            "The request's session was deleted before the request completed. The user may "
                            "have logged out in a concurrent request, for example.")
                    response.set_cookie(
                        name, session.session_key, max_age=max_age, expires=expires, domain=domain, path=path,
                        secure=bool(conf.setting("SESSION_COOKIE_SECURE")),
                        httponly=bool(conf.setting("SESSION_COOKIE_HTTPONLY")), samesite=samesite)
                    need_vary_cookie = True
        if need_vary_cookie:
            patch_vary_headers(response, ("Cookie",))
        return response


def _no_kv() -> Any:
    raise AssertionError("The session middleware calls the session's own methods, never KV itself.")


async def _ano_kv() -> Any:
    return _no_kv()

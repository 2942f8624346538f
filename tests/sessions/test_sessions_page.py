"""The "Your sessions" page (``include("django_cfkv.urls")``), sync and async, and the admin's "Sign out
everywhere"."""

import re

import pytest
from asgiref.sync import async_to_sync
from django.contrib.admin import AdminSite, ModelAdmin
from django.contrib.auth import get_user_model
from django.contrib.messages.storage.cookie import CookieStorage
from django.test import AsyncClient, Client, RequestFactory
from django.urls import reverse

from django_cfkv import get_kv
from django_cfkv.admin import add_to_user_admin, sign_out_everywhere
from django_cfkv.sessions import hashed_id, issue_token, user_sessions

from .test_user_sessions import FIREFOX, IPHONE, MIDDLEWARE, browser, ref_of

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db]

PAGE = "/account/sessions/"
ASYNC_PAGE = "/async-account/sessions/"  # AsyncUserSessionsView


@pytest.fixture(autouse=True)
def site(settings, emu):
    settings.MIDDLEWARE = MIDDLEWARE
    return settings


@pytest.fixture(params=[PAGE, ASYNC_PAGE], ids=["sync", "async"])
def page(request):
    """The page's path: UserSessionsView, or AsyncUserSessionsView (run by the test client in an event loop of
    its own, its KV calls awaited there)."""
    return request.param


def csrf_browser(user, agent=FIREFOX):
    """A browser signed in as ``user`` whose POSTs need the CSRF token, as a real one's do."""
    client = Client(enforce_csrf_checks=True, HTTP_USER_AGENT=agent, REMOTE_ADDR="203.0.113.9")
    client.get(f"/login/{user.pk}/")
    return client


def post(client, page, **data):
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(page).content.decode()).group(1)
    return client.post(page, {"csrfmiddlewaretoken": token, **data})


def test_the_page_is_named_and_needs_a_sign_in(user, page, settings):
    assert reverse("django_cfkv:sessions") == PAGE
    anonymous = Client()
    for method in ("get", "post", "options", "put", "delete", "head"):
        response = getattr(anonymous, method)(page)
        assert response.status_code == 302 and response["Location"] == f"/accounts/login/?next={page}", method
    settings.LOGIN_URL = "https://sso.example.com/login/"  # another host: it needs the whole URL to come back
    assert anonymous.get(page + "?x=1")["Location"] == f"https://sso.example.com/login/?next=http%3A//testserver{page}%3Fx%3D1"


def test_a_proxys_sign_in_and_sign_out_count_at_once_in_an_async_stack(user, page, settings):
    """RemoteUserMiddleware logs users in and out after AuthenticationMiddleware: on Django 5.2 that leaves
    ``request.auser()`` answering with the user it read before, whom the page must not trust."""
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.RemoteUserBackend"]
    settings.MIDDLEWARE = ["django_cfkv.sessions.middleware.SessionMiddleware", *MIDDLEWARE[1:],
                           "django.contrib.auth.middleware.RemoteUserMiddleware"]
    client = AsyncClient()
    vouched = async_to_sync(client.get)(page, headers={"Remote-User": user.get_username()})
    dropped = async_to_sync(client.get)(page)  # the proxy no longer vouches: the middleware logs the session out
    assert (vouched.status_code, dropped.status_code) == (200, 302)


def test_the_page_lists_the_users_own_sessions_only(user, other, page):
    laptop = csrf_browser(user)
    browser(user, IPHONE)
    issue_token(None, user)
    browser(other, "their-secret-device/1.0")
    shown = laptop.get(page)
    html = shown.content.decode()
    assert shown.status_code == 200 and shown["Cache-Control"].startswith("max-age=0")
    assert html.count('name="ref"') == 2  # the others; this session has no button
    assert "This session" in html and "Firefox on Linux" in html and "Safari on iPhone" in html
    assert "(token)" in html and "their-secret-device" not in html and "just now" in html
    assert laptop.cookies["sessionid"].value not in html


def test_signing_out_another_session_from_the_page(user, page):
    laptop, phone = csrf_browser(user), browser(user, IPHONE)
    response = post(laptop, page, action="one", ref=ref_of(phone))
    assert response.status_code == 302 and response["Location"] == page + "?signed_out=1"
    assert "Signed out of 1 session." in laptop.get(response["Location"]).content.decode()
    assert phone.get("/whoami/").json()["user"] is None
    assert laptop.get("/whoami/").json()["user"] == user.pk


def test_signing_out_all_other_sessions_from_the_page(user, page):
    laptop, phone = csrf_browser(user), browser(user, IPHONE)
    token = issue_token(None, user)
    assert post(laptop, page, action="others")["Location"] == page + "?signed_out=2"
    assert phone.get("/whoami/").json()["user"] is None
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert [s.ref for s in user_sessions(user)] == [ref_of(laptop)]


@pytest.mark.parametrize("csrf_middleware", [True, False])
def test_the_page_refuses_a_post_without_the_csrf_token(user, settings, csrf_middleware, page):
    if not csrf_middleware:  # the view protects itself on a site without CsrfViewMiddleware
        settings.MIDDLEWARE = [name for name in MIDDLEWARE if "csrf" not in name]
    laptop, phone = csrf_browser(user), browser(user, IPHONE)
    assert laptop.post(page, {"action": "others"}).status_code == 403
    assert laptop.post(page, {"action": "one", "ref": ref_of(phone)}).status_code == 403
    assert phone.get("/whoami/").json()["user"] == user.pk


def test_the_page_refuses_another_users_session_its_own_and_junk(user, other, page):
    laptop, theirs = csrf_browser(user), browser(other)
    assert post(laptop, page, action="one", ref=ref_of(theirs))["Location"] == page + "?signed_out=0"
    assert theirs.get("/whoami/").json()["user"] == other.pk
    assert post(laptop, page, action="one", ref=ref_of(laptop)).status_code == 400  # log out instead
    assert post(laptop, page, action="one", ref="../" + "a" * 61).status_code == 400
    assert post(laptop, page, action="everything").status_code == 400
    for junk in ("<b>", "\u00b2", "9" * 5000):  # "²" is a digit to isdigit(), not to int(); int() refuses 5,000
        shown = laptop.get(page, {"signed_out": junk})
        assert shown.status_code == 200 and shown.content.decode().count("Signed out of") == 0


def test_the_page_says_when_kv_cannot_be_reached(user, emu, settings, page):
    settings.SESSION_CFKV_NEAR_CACHE_TIMEOUT = 60  # the session itself loads from memory: only the listing fails
    laptop, phone = csrf_browser(user), browser(user, IPHONE)
    shown = laptop.get(page)
    with emu.faults(rate_503=1.0):
        listed = laptop.get(page)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', shown.content.decode()).group(1)
        refused = laptop.post(page, {"csrfmiddlewaretoken": token, "action": "one", "ref": ref_of(phone)})
    assert listed.status_code == 503 and "cannot be listed right now" in listed.content.decode()
    assert listed["Retry-After"] == "5"
    assert refused.status_code == 503 and "Nothing was signed out" in refused.content.decode()
    assert phone.get("/whoami/").json()["user"] == user.pk


@pytest.mark.parametrize(("zone", "times"), [
    ("Asia/Tokyo", {"expires": 253402300799}),  # 9999-12-31 23:59:59 UTC: past the year 9999 in Tokyo
    ("America/Chicago", {"seen": -62135596800}),  # 0001-01-01 UTC: before the year 1 in Chicago
    ("UTC", {"expires": 10**400, "created": -(10**400)}),  # no float holds them
], ids=["tokyo", "chicago", "huge"])
def test_a_planted_entry_with_times_no_page_can_show_is_listed_without_them(user, page, settings, zone, times):
    """A namespace writer's index entry under the user's prefix: listed with its times unknown, never a 500."""
    from django_cfkv.sessions import index

    settings.TIME_ZONE = zone
    laptop = csrf_browser(user)
    planted = index.user_prefixes("session:", str(user.pk))[0] + hashed_id("plantedsessionkey0123456789abcde")
    get_kv().put(planted, "", expiration_ttl=3600, metadata={"kind": "session", **times})
    shown = laptop.get(page)
    assert shown.status_code == 200 and shown.content.decode().count('name="ref"') == 1


def test_times_read_as_people_say_them():
    from datetime import timedelta

    from django.utils import timezone

    from django_cfkv.templatetags.cfkv_sessions import ago

    now = timezone.now()
    assert ago(now) == "just now" and ago(None) == "—"
    assert ago(now - timedelta(minutes=3, seconds=5)) == "3\xa0minutes ago"


# The admin action (on admin sites of the test's own: the test settings install no admin)


class UserAdmin(ModelAdmin):
    pass



def admin_request(user):
    request = RequestFactory().post("/admin/auth/user/")
    request.user = user
    request.session = Client().session
    request._messages = CookieStorage(request)
    return request


def test_the_user_admin_gets_the_action():
    site = AdminSite()
    site.register(get_user_model(), UserAdmin)
    add_to_user_admin(site)
    add_to_user_admin(site)  # once only
    assert list(site.get_model_admin(get_user_model()).actions).count(sign_out_everywhere) == 1
    add_to_user_admin(AdminSite())  # no user admin there: nothing to do


def test_sign_out_everywhere_signs_the_selected_users_out(user, other):
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    laptop, phone, theirs = browser(user), browser(user, IPHONE), browser(other)
    token = issue_token(None, user)
    request = admin_request(staff)
    model_admin = UserAdmin(get_user_model(), AdminSite())
    sign_out_everywhere(model_admin, request, get_user_model().objects.filter(pk=user.pk))
    assert [m.message for m in request._messages] == ["Signed out 3 sessions of 1 user."]
    assert laptop.get("/whoami/").json()["user"] is None and phone.get("/whoami/").json()["user"] is None
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert theirs.get("/whoami/").json()["user"] == other.pk
    assert hashed_id(theirs.cookies["sessionid"].value) in {s.ref for s in user_sessions(other)}


@pytest.mark.parametrize("setting, value", [("SESSION_CFKV_USER_INDEX", False), ("SESSION_CFKV_KEY_LAYOUT", "plain")])
def test_sign_out_everywhere_without_the_index_says_what_to_set_and_signs_no_one_out(user, settings, setting, value):
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    laptop = browser(user)
    setattr(settings, setting, value)
    request = admin_request(staff)
    sign_out_everywhere(UserAdmin(get_user_model(), AdminSite()), request, get_user_model().objects.filter(pk=user.pk))
    [message] = [m.message for m in request._messages]
    assert message.startswith("No session was signed out: ") and setting in message
    delattr(settings, setting)
    assert laptop.get("/whoami/").json()["user"] == user.pk

"""The admin action "Sign out everywhere" on the user model.

With ``django_cfkv`` and ``django.contrib.admin`` installed, the user model's
admin on the default site gets the action; for an admin of your own, add
``django_cfkv.admin.sign_out_everywhere`` to its ``actions``.
"""

from typing import Any

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.auth import get_user_model, logout
from django.db.models import QuerySet
from django.http import HttpRequest

from .exceptions import CFKVConfigurationError, KVError
from .sessions import revoke_all_sessions


@admin.action(description="Sign out everywhere", permissions=["change"])
def sign_out_everywhere(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    """Revoke every session (cookie and bearer) of the selected users; an admin who selected themself is logged out.

    One list call per 1,000 sessions of each user and a bulk delete. Another
    Cloudflare location may still accept a session for up to about a minute.
    """
    users = list(queryset)
    try:
        count = sum(revoke_all_sessions(user) for user in users)
    except KVError as exc:
        modeladmin.message_user(request, f"Not every session was signed out: Workers KV did not answer "
                                         f"({type(exc).__name__}). Try again.", messages.ERROR)
        return
    except CFKVConfigurationError as exc:  # the index is off, or sessions are in the plain layout
        modeladmin.message_user(request, f"No session was signed out: {exc.message} {exc.hint or ''}".rstrip(),
                                messages.ERROR)
        return
    if any(user.pk == getattr(request.user, "pk", None) for user in users):
        logout(request)  # this request's session is gone: start afresh rather than fail saving it
        return
    modeladmin.message_user(request, f"Signed out {count} session{'s' if count != 1 else ''} of "
                                     f"{len(users)} user{'s' if len(users) != 1 else ''}.", messages.SUCCESS)


def add_to_user_admin(site: admin.AdminSite = admin.site) -> None:
    """Add "Sign out everywhere" to the actions of the user model's admin on ``site``, if it has one."""
    model = get_user_model()
    if not site.is_registered(model):
        return
    model_admin = site.get_model_admin(model)
    actions = list(model_admin.actions or ())
    if sign_out_everywhere not in actions:
        model_admin.actions = [*actions, sign_out_everywhere]


if apps.is_installed("django.contrib.admin"):  # the default site exists only then
    add_to_user_admin()

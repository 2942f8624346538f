"""manage.py clearsessions, as Django's, where a KV failure is a sentence instead of a traceback.

Django runs the command of the first app in INSTALLED_APPS that has one:
this one runs when ``django_cfkv`` is listed before ``django.contrib.sessions``
(or when that app, whose table KV sessions do not use, is not installed).
"""

from typing import Any

from django.contrib.sessions.management.commands import clearsessions
from django.core.management.base import CommandError

from ...exceptions import KVError


class Command(clearsessions.Command):
    def handle(self, **options: Any) -> None:
        try:
            super().handle(**options)
        except KVError as exc:
            raise CommandError(f"Expired sessions were not cleared: Workers KV failed ({exc}). Expired "
                               "sessions stay until the next run; run clearsessions again once KV answers.") from exc

"""A project's session engine as many were written before Django 5: Django's cache engine with its own save()."""

from django.contrib.sessions.backends.cache import SessionStore as CacheStore

SAVES = []


class SessionStore(CacheStore):
    def save(self, must_create=False):
        SAVES.append(must_create)  # an audit trail, a per-user index, a refusal...
        super().save(must_create)

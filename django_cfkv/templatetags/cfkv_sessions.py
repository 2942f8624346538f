"""Template filters for django-cfkv's pages: ``{% load cfkv_sessions %}``."""

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

register = template.Library()


@register.filter
def ago(moment: datetime | None) -> str:
    """Return how long ago ``moment`` was ("just now" under a minute, "3 minutes ago"), or "—" when unknown."""
    if moment is None:
        return "—"
    if (timezone.now() - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment)} ago"

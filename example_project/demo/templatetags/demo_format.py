"""What KV stores, in the form a person reads: relative times, JSON, bars, keys that wrap.

Values shown here may come from anyone who can write the namespace (metadata,
key names), so every filter copes with the wrong type and escapes what it outputs.
"""

import json
import math
import re
import time
from datetime import datetime, timezone

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

register = template.Library()

# (unit, seconds, plural, how many of it before the next unit is used)
_UNITS = (("s", 1, "s", 60), ("min", 60, "min", 60), ("h", 3600, "h", 24), ("day", 86400, "days", 7),
          ("week", 7 * 86400, "weeks", 5), ("month", 30 * 86400, "months", 12),
          ("year", 365 * 86400, "years", None))
_PERIODS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def as_datetime(value):
    """Return ``value`` (a datetime or epoch seconds) as an aware datetime, or None if it is neither."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):  # out of datetime's range
        return None


def relative(moment, now=None):
    """Return how far ``moment`` is from ``now``, roughly: "in 2 weeks", "3 s ago", "now"."""
    now = time.time() if now is None else now
    delta = moment.timestamp() - now
    seconds = abs(delta)
    if seconds < 0.5:
        return "now"
    for unit, size, plural, most in _UNITS:
        count = round(seconds / size)
        if most is None or count < most:  # the largest unit of which there are fewer than the next
            text = f"{count} {unit if count == 1 else plural}"
            return f"in {text}" if delta > 0 else f"{text} ago"


def exact(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@register.simple_tag
def when(value, missing="unknown"):
    """Render a moment as relative time, with the exact time in its tooltip and ``datetime``."""
    moment = as_datetime(value)
    if moment is None:
        return missing
    moment = moment.astimezone(timezone.utc)
    return format_html('<time datetime="{}" title="{}">{}</time>',
                       moment.isoformat(timespec="seconds").replace("+00:00", "Z"), exact(moment), relative(moment))


@register.filter
def exact_time(value):
    """Return the exact UTC time of a datetime or epoch seconds ("" when it is neither)."""
    moment = as_datetime(value)
    return exact(moment.astimezone(timezone.utc)) if moment else ""


@register.filter
def pretty_json(value):
    """Return ``value`` as indented JSON (metadata is stored, and read by Workers, as JSON)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@register.filter
def json_line(value):
    """Return ``value`` as JSON on one line."""
    return json.dumps(value, ensure_ascii=False, default=str)


@register.filter
def breakable(value):
    """Escape ``value`` and let it wrap after its separators (":", "/", "."): keys and paths break there."""
    return mark_safe(re.sub(r"([:/.])", r"\1<wbr>", escape(value)))


@register.filter
def percent(value, whole):
    """Return ``value`` as a whole percentage of ``whole``, capped at 100 (0 when either is unusable)."""
    try:
        share = float(value) / float(whole)
    except (TypeError, ValueError, ZeroDivisionError):
        return 0
    return max(0, min(100, round(share * 100))) if math.isfinite(share) else 0


@register.filter
def period_name(seconds):
    """Return a limiter period in words: 60 is "minute", 90 is "90 s"."""
    return _PERIODS.get(seconds, f"{seconds} s")

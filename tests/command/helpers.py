"""Running ``manage.py cfkv`` in a test, and a namespace seeded with one entry of each kind."""

import io
import json
import time

from django.core.management import call_command

HOUR = 3600


class FakeTTY(io.StringIO):
    """A terminal stand-in: isatty() is True, answers come from ``text``."""

    def isatty(self):
        return True


def run(*args, stdin=None, stderr=None):
    """Run ``manage.py cfkv *args``; return its stdout."""
    out = io.StringIO()
    kwargs = {"stdin": stdin} if stdin is not None else {}
    call_command("cfkv", *args, stdout=out, stderr=stderr or io.StringIO(), **kwargs)
    return out.getvalue()


def run_json(*args):
    return json.loads(run(*args, "--json"))


def seed(kv, now=None):
    """Store one entry of each kind and state; return ``now``."""
    now = time.time() if now is None else now
    kv.put("session:live", '{"_auth_user_id": "1"}', expiration_ttl=2 * HOUR,
           metadata={"kind": "session", "expires": now + HOUR, "size": 22})
    kv.put("session:old", '{"_auth_user_id": "2"}', expiration_ttl=HOUR,
           metadata={"kind": "session", "expires": now - 600})
    kv.put("c:1:page", '{"expires": null, "value": [1, 2]}', metadata={"kind": "cache"})
    kv.put("rl:login:ip:1", '{"count": 3}', expiration_ttl=HOUR,
           metadata={"kind": "ratelimit", "expires": now + 30 * 86400})
    kv.put("blob", b"\x00\xff\x10")
    return now

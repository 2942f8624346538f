"""manage.py clearsessions for sites that leave out django.contrib.sessions (KV sessions do not use its table).

Where both apps are installed, Django runs the command of the first one listed; either way a KV failure ends
in one sentence, since SessionStore.clear_expired() raises ExpiredSessionsNotCleared, a CommandError.
"""

from django.contrib.sessions.management.commands.clearsessions import Command

__all__ = ["Command"]

"""Operations on a namespace for operators: sweeping expired entries, moving sessions to hashed keys, pinging.

``manage.py cfkv sweep``, ``migrate-sessions`` and ``ping`` are thin shells over these; a periodic
task can call :func:`sweep` directly. Kinds and expiries are judged as in :mod:`django_cfkv.inspect`.

Modules: :mod:`.sweep`, :mod:`.session_keys` (the plain key layout to the hashed one), :mod:`.ping`.
"""

from .ping import GATEWAY_HEALTH_PATH, GATEWAY_SERVICE, gateway_health, ping
from .session_keys import move_plain_sessions
from .sweep import SWEEP_GRACE, Sweep, sweep

__all__ = [
    "GATEWAY_HEALTH_PATH", "GATEWAY_SERVICE", "SWEEP_GRACE", "Sweep", "gateway_health", "move_plain_sessions",
    "ping", "sweep",
]

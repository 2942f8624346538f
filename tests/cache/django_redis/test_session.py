"""django-redis' own ``tests/test_session.py``, run on CloudflareKVCache (see suite.py and conftest.py)."""

from .suite import exported

globals().update(exported("test_session"))

"""django-redis' own ``tests/test_cache_options.py``, run on CloudflareKVCache (see suite.py and conftest.py)."""

from .suite import exported

globals().update(exported("test_cache_options"))

"""django-ratelimit's own ``django_ratelimit/tests.py``, run on django_cfkv.ratelimit (see suite.py and
conftest.py)."""

from .suite import suite_classes

globals().update(suite_classes())

"""django-ratelimit's own ``django_ratelimit/tests.py``, run on django_cfkv.ratelimit (see suite.py and
conftest.py): each class as it is, counting through the REST client on the emulator, and again as
``<class>OnLocalKV``, counting on the embedded store."""

from .suite import LOCAL_SUFFIX, suite_classes

for _name, _cls in suite_classes().items():
    globals()[_name] = _cls
    globals()[_name + LOCAL_SUFFIX] = type(_name + LOCAL_SUFFIX, (_cls,), {"cfkv_store": "local"})

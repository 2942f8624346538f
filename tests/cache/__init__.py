"""Tests of the cache backend (django_cfkv.cache)."""

"""Tests of rate limiting (django_cfkv.ratelimit and its middleware)."""

"""Tests of the session engine and bearer tokens (django_cfkv.sessions)."""

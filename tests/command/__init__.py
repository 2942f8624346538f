"""Tests of manage.py cfkv."""

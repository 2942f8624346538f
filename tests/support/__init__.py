"""Shared test helpers: fakes and servers more than one test module uses."""

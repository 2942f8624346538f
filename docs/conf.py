"""Sphinx configuration for django-cfkv's documentation (`make docs`)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# autodoc imports the package, and the package imports Django's settings.
import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    SECRET_KEY="docs",
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions", "django_cfkv"],
    CFKV={"default": {"BACKEND": "local", "PATH": ":memory:"}},
)
django.setup()

import django_cfkv  # noqa: E402

project = "django-cfkv"
author = "django-cfkv contributors"
copyright = "django-cfkv contributors"
release = django_cfkv.__version__
version = ".".join(release.split(".")[:2])

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# Markdown: heading anchors (#the-cfkv-setting) for the first three levels, so links
# between pages name the section they mean and the build checks that it exists.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]

# Every reference must resolve (sphinx-build -n -W). References to other projects'
# objects (Django, requests, the standard library) are not linked: the build is
# offline, so there is no inventory to resolve them against.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(django|requests|urllib3|collections|typing|datetime|pathlib|logging|threading|ipaddress|os)(\..*)?"),
    (r"py:.*", r"(bytes|str|int|float|bool|dict|list|tuple|set|object|None|Exception|ValueError|AssertionError)"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

html_theme = "furo"
html_title = f"django-cfkv {release}"
html_static_path = []
html_show_sourcelink = False
html_copy_source = False

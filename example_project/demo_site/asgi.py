"""ASGI entry point for the example site (``make run-asgi``: ``uvicorn demo_site.asgi:application``).

With ``DEBUG`` on, the site's stylesheet is served as ``runserver`` serves it
under WSGI; in production a web server or WhiteNoise serves static files.
"""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
application = get_asgi_application()

if settings.DEBUG:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    application = ASGIStaticFilesHandler(application)

"""URLs of django-cfkv's pages: ``path("account/", include("django_cfkv.urls"))``.

``django_cfkv:sessions``: "Your sessions", the signed-in user's sessions with sign-out buttons.
"""

from django.urls import path

from .sessions.views import UserSessionsView

app_name = "django_cfkv"

urlpatterns = [
    path("sessions/", UserSessionsView.as_view(), name="sessions"),
]

from django.urls import path

from demo import api, async_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("slow/", views.slow, name="slow"),
    path("async/", async_views.page, name="async"),
    path("namespace/", views.namespace, name="namespace"),
    path("account/sessions/", views.SessionsView.as_view(), name="sessions"),
    path("api/", views.api_docs, name="api"),
    path("api/token", api.token, name="api-token"),
    path("api/me", api.me, name="api-me"),
    path("api/ping", api.ping, name="api-ping"),
]

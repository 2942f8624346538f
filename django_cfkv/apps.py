from django.apps import AppConfig


class CfkvConfig(AppConfig):
    name = "django_cfkv"
    verbose_name = "Cloudflare Workers KV"

    def ready(self) -> None:
        from django.apps import apps

        from . import checks  # noqa: F401  (registers the system checks)

        if apps.is_installed("django.contrib.admin"):
            from .admin import add_to_user_admin

            add_to_user_admin()  # the user model's admin is registered by now when the admin is listed first

from django.apps import AppConfig


class CfkvConfig(AppConfig):
    name = "django_cfkv"
    verbose_name = "Cloudflare Workers KV"

    def ready(self) -> None:
        from django.apps import apps
        from django.conf import settings
        from django.db.models.signals import pre_save

        from . import checks  # noqa: F401  (registers the system checks)
        from .sessions.per_user import follow_user_field

        pre_save.connect(follow_user_field, sender=settings.AUTH_USER_MODEL,
                         dispatch_uid="django_cfkv.sessions.follow_user_field")

        if apps.is_installed("django.contrib.admin"):
            from .admin import add_to_user_admin

            add_to_user_admin()  # the user model's admin is registered by now when the admin is listed first

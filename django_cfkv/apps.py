from django.apps import AppConfig


class CfkvConfig(AppConfig):
    name = "django_cfkv"
    verbose_name = "Cloudflare Workers KV"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

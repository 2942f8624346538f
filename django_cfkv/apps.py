from django.apps import AppConfig


class CfkvConfig(AppConfig):
    name = "django_cfkv"
    verbose_name = "Cloudflare Workers KV"

    def ready(self) -> None:
        from django.apps import apps
        from django.db.models.signals import post_delete, post_save, pre_save

        from . import checks  # noqa: F401  (registers the system checks)
        from .sessions import value_change

        # Any sender: a save through a proxy or a subclass of the user model is a save of a user too.
        pre_save.connect(value_change.note_former_value, dispatch_uid="django_cfkv.sessions.note_former_value")
        post_save.connect(value_change.follow_saved_value, dispatch_uid="django_cfkv.sessions.follow_saved_value")
        # A deletion's receiver only for the user models: one for every model would stop Django's fast deletes.
        for model in value_change.user_models():
            post_delete.connect(value_change.sign_out_deleted_user, sender=model,
                                dispatch_uid=f"django_cfkv.sessions.sign_out_deleted.{model._meta.label}")

        if apps.is_installed("django.contrib.admin"):
            from .admin import add_to_user_admin

            add_to_user_admin()  # the user model's admin is registered by now when the admin is listed first

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the example site's demo user (or reset its password) and print its credentials."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo", help="default: demo")
        parser.add_argument("--password", default="cfkv-demo", help="default: cfkv-demo")

    def handle(self, *args, username, password, **options):
        user, created = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = True  # staff may open the namespace page
        user.save()
        action = "Created" if created else "Reset"
        self.stdout.write(self.style.SUCCESS(
            f"{action} the demo user. Sign in at /login/ as {username} / {password} (staff)."
        ))

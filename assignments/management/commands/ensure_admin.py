import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "On the first run, create the 'admin' user with a random password and print it once."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(options["username"], "", password)
        bar = "*" * 64
        self.stdout.write(
            f"{bar}\nCreated the administrator account - this password is shown only once:\n"
            f"    username: {options['username']}\n    password: {password}\n"
            f"Change it at /admin/password_change/ after signing in.\n{bar}"
        )

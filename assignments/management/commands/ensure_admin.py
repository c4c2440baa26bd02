import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "On the first run, create the 'admin' user with a random password, written to an "
        "owner-only file whose path is printed (the password itself never reaches a log)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--password-file", help="where to write the password (default: var/admin-password)"
        )

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        path = Path(options.get("password_file") or Path(settings.VAR_DIR) / "admin-password")
        password = secrets.token_urlsafe(12)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        os.chmod(path, 0o600)
        User.objects.create_superuser(options["username"], "", password)
        self.stdout.write(
            f"Created the administrator account '{options['username']}'. Its password is in\n"
            f"    {path}\n(readable by this user only). Sign in, change it at "
            "/admin/password_change/, then delete the file."
        )

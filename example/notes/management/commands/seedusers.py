from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create (or reset the password of) the given users, all with the same password."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("usernames", nargs="+")
        parser.add_argument("--password", required=True)

    def handle(self, *args, usernames: list[str], password: str, **options) -> None:
        user_model = get_user_model()
        for username in usernames:
            user, _ = user_model.objects.get_or_create(username=username)
            user.set_password(password)
            user.save()
        self.stdout.write(f"{len(usernames)} user(s) ready\n")

from django.db import models


class Note(models.Model):
    """A row written by a client under a key the client chose, so it can be found again."""

    key = models.CharField(max_length=100, unique=True)
    author = models.CharField(max_length=150, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key

from django.conf import settings
from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=200)
    attachment = models.FileField(upload_to="attachments/", blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="notes",
    )

    def __str__(self):
        return self.title

from django.db import models
from django.urls import reverse


class Post(models.Model):
    """A message on the board, optionally with a file attached."""

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    attachment = models.FileField(upload_to='posts/%Y/%m/', blank=True)

    class Meta:
        ordering = ['-created', '-id']

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse('board:index') + f'#post-{self.pk}'

    def attachment_url(self):
        """Where the attachment is downloaded: the view that checks and sends it."""
        if not self.attachment:
            return None
        return reverse('board:attachment', args=[self.pk])

    def as_json(self):
        """The post as the JSON API shows it."""
        return {
            'id': self.pk,
            'title': self.title,
            'body': self.body,
            'created': self.created.isoformat(),
            'attachment': self.attachment_url(),
        }

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.template.defaultfilters import filesizeformat

from .models import Post


def check_upload_size(upload):
    """Refuses a file larger than BOARD_UPLOAD_MAX_SIZE. Django has already
    read it (spooled to a temporary file past FILE_UPLOAD_MAX_MEMORY_SIZE),
    so this bounds what is kept, not what is received: the web server's
    body limit bounds that."""
    limit = settings.BOARD_UPLOAD_MAX_SIZE
    if upload.size > limit:
        raise forms.ValidationError(
            'The file is %(size)s; at most %(limit)s is allowed.',
            code='too_large',
            params={'size': filesizeformat(upload.size), 'limit': filesizeformat(limit)},
        )


class PostForm(forms.ModelForm):
    class Meta:
        model = Post
        fields = ['title', 'body', 'attachment']
        widgets = {'body': forms.Textarea(attrs={'rows': 6})}

    def clean_attachment(self):
        attachment = self.cleaned_data.get('attachment')
        if isinstance(attachment, UploadedFile):
            check_upload_size(attachment)
        return attachment


class UploadForm(forms.Form):
    file = forms.FileField()

    def clean_file(self):
        upload = self.cleaned_data['file']
        check_upload_size(upload)
        return upload

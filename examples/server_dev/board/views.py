import hashlib
import mimetypes
import os
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_safe

from .forms import PostForm, UploadForm
from .models import Post

# How many posts the board and the API show: the newest ones.
LATEST = 20

# What /echo/ reports of the WSGI environ, besides every HTTP_* header.
ECHO_KEYS = (
    'REQUEST_METHOD',
    'PATH_INFO',
    'SCRIPT_NAME',
    'QUERY_STRING',
    'CONTENT_TYPE',
    'CONTENT_LENGTH',
    'SERVER_NAME',
    'SERVER_PORT',
    'SERVER_PROTOCOL',
    'REMOTE_ADDR',
    'wsgi.url_scheme',
    'wsgi.multithread',
    'wsgi.multiprocess',
)

READ_CHUNK = 64 * 1024


class HttpResponseSeeOther(HttpResponseRedirect):
    """303: after a POST, GET the target (a 302 leaves the method to the client)."""

    status_code = 303


def form_error_status(form, field):
    """The status of an invalid form: 413 when the file in field is too big, else 400."""
    if form.has_error(field, code='too_large'):
        return 413
    return 400


@require_safe
def index(request):
    posts = Post.objects.all()[:LATEST]
    return render(request, 'board/index.html', {'posts': posts})


@require_safe
def api_posts(request):
    posts = [post.as_json() for post in Post.objects.all()[:LATEST]]
    return JsonResponse({'posts': posts})


@require_safe
def hello(request):
    return HttpResponse('Hello, world!\n', content_type='text/plain; charset=utf-8')


@require_http_methods(['GET', 'HEAD', 'POST'])
def new_post(request):
    status = 200
    if request.method == 'POST':
        form = PostForm(request.POST, request.FILES)
        if form.is_valid():
            form.save()
            return HttpResponseSeeOther(reverse('board:index'))
        status = form_error_status(form, 'attachment')
    else:
        form = PostForm()
    return render(request, 'board/new_post.html', {'form': form}, status=status)


def stored_file_digest(name):
    """(size, sha256 hex) of a file in the default storage, read back from it."""
    digest = hashlib.sha256()
    size = 0
    with default_storage.open(name, 'rb') as stored:
        while chunk := stored.read(READ_CHUNK):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


@require_safe
def attachment(request, pk):
    """A post's attachment, as a download. This is where an application
    decides who may have a file; here, anyone who may see the post. Behind
    a front with an internal location for MEDIA_ROOT (BOARD_X_ACCEL_PREFIX),
    the answer only names the file (X-Accel-Redirect) and the front sends
    it, zero-copy, with ranges and conditionals; otherwise it is streamed
    from here."""
    post = get_object_or_404(Post, pk=pk)
    if not post.attachment:
        return HttpResponse('No attachment.\n', status=404, content_type='text/plain')
    filename = os.path.basename(post.attachment.name)
    prefix = settings.BOARD_X_ACCEL_PREFIX
    if not prefix:
        return FileResponse(post.attachment.open('rb'), as_attachment=True, filename=filename)
    content_type, encoding = mimetypes.guess_type(filename)
    response = HttpResponse(content_type=content_type or 'application/octet-stream')
    if encoding:
        response['Content-Encoding'] = encoding
    response['Content-Disposition'] = f"attachment; filename*=UTF-8''{quote(filename)}"
    response['X-Accel-Redirect'] = quote(prefix + post.attachment.name)
    return response


@require_http_methods(['GET', 'HEAD', 'POST'])
def upload(request):
    """Stores one file under MEDIA_ROOT/uploads/ and shows the size and
    SHA-256 of what was stored, so that a client can check that the bytes it
    sent arrived unchanged."""
    status = 200
    stored = None
    if request.method == 'POST':
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            received = form.cleaned_data['file']
            name = default_storage.save('uploads/' + received.name, received)
            size, sha256 = stored_file_digest(name)
            stored = {
                'name': name,
                'size': size,
                'sha256': sha256,
                'url': default_storage.url(name),
            }
            form = UploadForm()
        else:
            status = form_error_status(form, 'file')
    else:
        form = UploadForm()
    context = {'form': form, 'stored': stored, 'max_size': settings.BOARD_UPLOAD_MAX_SIZE}
    return render(request, 'board/upload.html', context, status=status)


@csrf_exempt
def echo(request):
    """What the WSGI server gave the application, as one flat JSON object:
    the environ keys of ECHO_KEYS (null when absent), every HTTP_* key, the
    worker's pid, and body_length and body_sha256 of the body as Django reads
    it (CONTENT_LENGTH bytes: a server must set it, after removing any
    chunked framing). Any method; exempt from CSRF so that tests can POST."""
    meta = request.META
    report = {key: meta.get(key) for key in ECHO_KEYS}
    report.update((key, value) for key, value in meta.items() if key.startswith('HTTP_'))
    digest = hashlib.sha256()
    length = 0
    while chunk := request.read(READ_CHUNK):
        length += len(chunk)
        digest.update(chunk)
    report['body_length'] = length
    report['body_sha256'] = digest.hexdigest()
    report['pid'] = os.getpid()
    return JsonResponse(report, json_dumps_params={'sort_keys': True})

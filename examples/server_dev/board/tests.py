import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client, TestCase, override_settings

from .models import Post
from .views import ECHO_KEYS

CSRF_INPUT = re.compile(r'<input type="hidden" name="csrfmiddlewaretoken" value="([^"]+)">')


def one_mib():
    """1 MiB that is not all one byte, so that a misplaced chunk shows in the digest."""
    return bytes(range(256)) * 4096


class MediaRootTestCase(TestCase):
    """Each test stores its uploads in a MEDIA_ROOT of its own, removed afterwards."""

    def setUp(self):
        super().setUp()
        self.media_root = Path(tempfile.mkdtemp(prefix='dj-board-media-'))
        self.addCleanup(shutil.rmtree, self.media_root, ignore_errors=True)
        media = override_settings(MEDIA_ROOT=str(self.media_root))
        media.enable()
        self.addCleanup(media.disable)


class IndexTests(TestCase):
    def test_empty_board(self):
        response = self.client.get('/')
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, 'base.html')
        self.assertTemplateUsed(response, 'board/index.html')
        self.assertContains(response, 'No posts yet.')

    def test_links_the_stylesheet_from_static(self):
        response = self.client.get('/')
        self.assertContains(
            response, '<link rel="stylesheet" href="/static/css/site.css">', html=True)

    def test_lists_posts_newest_first(self):
        Post.objects.create(title='older post', body='first body')
        Post.objects.create(title='newer post', body='second body')
        response = self.client.get('/')
        content = response.content.decode()
        self.assertNotIn('No posts yet.', content)
        self.assertIn('first body', content)
        self.assertLess(content.index('newer post'), content.index('older post'))

    def test_escapes_titles(self):
        Post.objects.create(title='<script>alert(1)</script>')
        response = self.client.get('/')
        self.assertNotContains(response, '<script>alert(1)</script>')
        self.assertContains(response, '&lt;script&gt;alert(1)&lt;/script&gt;')

    def test_shows_at_most_twenty(self):
        Post.objects.bulk_create(Post(title=f'post number {i:02d}') for i in range(25))
        response = self.client.get('/')
        self.assertEqual(len(response.context['posts']), 20)

    def test_post_is_refused(self):
        self.assertEqual(self.client.post('/').status_code, 405)


class HelloTests(TestCase):
    def test_plain_text(self):
        response = self.client.get('/hello/')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response['Content-Type'], 'text/plain; charset=utf-8')
        self.assertEqual(response.content, b'Hello, world!\n')

    def test_head(self):
        self.assertEqual(self.client.head('/hello/').status_code, 200)


class ApiPostsTests(MediaRootTestCase):
    def test_empty(self):
        response = self.client.get('/api/posts/')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response['Content-Type'], 'application/json')
        self.assertEqual(response.json(), {'posts': []})

    def test_lists_posts_newest_first(self):
        first = Post.objects.create(title='one', body='body one')
        second = Post.objects.create(
            title='two', attachment=SimpleUploadedFile('note.txt', b'attached\n'))
        posts = self.client.get('/api/posts/').json()['posts']
        self.assertEqual([p['id'] for p in posts], [second.pk, first.pk])
        self.assertEqual(posts[1], {
            'id': first.pk,
            'title': 'one',
            'body': 'body one',
            'created': first.created.isoformat(),
            'attachment': None,
        })
        self.assertEqual(posts[0]['attachment'], f'/posts/{second.pk}/attachment/')

    def test_one_query(self):
        Post.objects.bulk_create(Post(title=f't{i}') for i in range(30))
        with self.assertNumQueries(1):
            posts = self.client.get('/api/posts/').json()['posts']
        self.assertEqual(len(posts), 20)

    def test_post_is_refused(self):
        self.assertEqual(self.client.post('/api/posts/').status_code, 405)


class NewPostTests(MediaRootTestCase):
    def setUp(self):
        super().setUp()
        self.csrf_client = Client(enforce_csrf_checks=True)

    def get_token(self):
        response = self.csrf_client.get('/posts/new/')
        self.assertEqual(response.status_code, 200)
        token = CSRF_INPUT.search(response.content.decode())
        self.assertIsNotNone(token, 'no CSRF token in the form')
        self.assertIn(settings.CSRF_COOKIE_NAME, response.cookies)
        return token.group(1)

    def test_form(self):
        response = self.client.get('/posts/new/')
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, 'base.html')
        self.assertContains(response, 'enctype="multipart/form-data"')
        self.assertContains(response, 'name="title"')
        self.assertContains(response, 'name="attachment"')

    def test_post_without_token_is_forbidden(self):
        self.get_token()  # the cookie alone is not enough
        response = self.csrf_client.post('/posts/new/', {'title': 'no token'})
        self.assertEqual(response.status_code, 403)
        self.assertFalse(Post.objects.exists())

    def test_post_with_a_wrong_token_is_forbidden(self):
        self.get_token()
        response = self.csrf_client.post(
            '/posts/new/', {'title': 'bad token', 'csrfmiddlewaretoken': 'x' * 64})
        self.assertEqual(response.status_code, 403)
        self.assertFalse(Post.objects.exists())

    def test_post_creates_and_redirects(self):
        token = self.get_token()
        response = self.csrf_client.post('/posts/new/', {
            'csrfmiddlewaretoken': token,
            'title': 'Hello board',
            'body': 'from the form',
        })
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response['Location'], '/')
        post = Post.objects.get()
        self.assertEqual((post.title, post.body, post.attachment.name),
                         ('Hello board', 'from the form', ''))
        self.assertContains(self.csrf_client.get('/'), 'Hello board')

    def test_post_with_attachment(self):
        token = self.get_token()
        response = self.csrf_client.post('/posts/new/', {
            'csrfmiddlewaretoken': token,
            'title': 'with a file',
            'attachment': SimpleUploadedFile('report.txt', b'report contents\n'),
        })
        self.assertEqual(response.status_code, 303)
        post = Post.objects.get()
        self.assertTrue(post.attachment.name.startswith('posts/'))
        stored = self.media_root / post.attachment.name
        self.assertEqual(stored.read_bytes(), b'report contents\n')

    def test_invalid_form_is_shown_again(self):
        token = self.get_token()
        response = self.csrf_client.post('/posts/new/', {'csrfmiddlewaretoken': token, 'title': ''})
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, 'This field is required.', status_code=400)
        self.assertFalse(Post.objects.exists())

    @override_settings(BOARD_UPLOAD_MAX_SIZE=1000)
    def test_attachment_too_large(self):
        response = self.client.post('/posts/new/', {
            'title': 'too big',
            'attachment': SimpleUploadedFile('big.bin', b'x' * 1001),
        })
        self.assertEqual(response.status_code, 413)
        self.assertFalse(Post.objects.exists())


class UploadTests(MediaRootTestCase):
    def test_form(self):
        response = self.client.get('/upload/')
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, 'enctype="multipart/form-data"')
        self.assertContains(response, 'name="csrfmiddlewaretoken"')
        self.assertContains(response, 'At most 25.0\xa0MB.')

    def test_upload_without_token_is_forbidden(self):
        client = Client(enforce_csrf_checks=True)
        client.get('/upload/')
        response = client.post('/upload/', {'file': SimpleUploadedFile('a.bin', b'abc')})
        self.assertEqual(response.status_code, 403)
        self.assertFalse((self.media_root / 'uploads').exists())

    def test_one_mib(self):
        data = one_mib()
        client = Client(enforce_csrf_checks=True)
        token = CSRF_INPUT.search(client.get('/upload/').content.decode()).group(1)
        response = client.post('/upload/', {
            'csrfmiddlewaretoken': token,
            'file': SimpleUploadedFile('one-mib.bin', data),
        })
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, '<dd id="upload-size">1048576</dd>', html=True)
        self.assertContains(
            response, f'<dd id="upload-sha256">{hashlib.sha256(data).hexdigest()}</dd>', html=True)
        stored = response.context['stored']
        self.assertTrue(stored['name'].startswith('uploads/one-mib'))
        self.assertEqual((self.media_root / stored['name']).read_bytes(), data)

    def test_larger_than_memory_threshold(self):
        # Spooled to a temporary file while read: the result is the same.
        data = os.urandom(settings.FILE_UPLOAD_MAX_MEMORY_SIZE + 12345)
        response = self.client.post('/upload/', {'file': SimpleUploadedFile('big.bin', data)})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.context['stored']['size'], len(data))
        self.assertEqual(response.context['stored']['sha256'], hashlib.sha256(data).hexdigest())

    def test_same_name_twice_keeps_both(self):
        first = self.client.post('/upload/', {'file': SimpleUploadedFile('same.txt', b'one')})
        second = self.client.post('/upload/', {'file': SimpleUploadedFile('same.txt', b'two')})
        a, b = first.context['stored']['name'], second.context['stored']['name']
        self.assertNotEqual(a, b)
        self.assertEqual((self.media_root / a).read_bytes(), b'one')
        self.assertEqual((self.media_root / b).read_bytes(), b'two')

    def test_name_cannot_escape_media_root(self):
        # Built by hand: the test client would send only the base name.
        boundary = 'dj-boundary-7e1f'
        body = (
            f'--{boundary}\r\n'
            'Content-Disposition: form-data; name="file"; filename="../../escape.txt"\r\n'
            'Content-Type: text/plain\r\n\r\n'
            'nope\r\n'
            f'--{boundary}--\r\n'
        ).encode()
        response = self.client.post(
            '/upload/', body, content_type=f'multipart/form-data; boundary={boundary}')
        self.assertEqual(response.status_code, 200)
        name = response.context['stored']['name']
        self.assertEqual(name, 'uploads/escape.txt')
        self.assertTrue((self.media_root / name).is_file())

    def test_missing_file(self):
        response = self.client.post('/upload/', {})
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, 'This field is required.', status_code=400)

    def test_empty_file(self):
        response = self.client.post('/upload/', {'file': SimpleUploadedFile('empty.txt', b'')})
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, 'The submitted file is empty.', status_code=400)

    @override_settings(BOARD_UPLOAD_MAX_SIZE=1024)
    def test_limit(self):
        at_limit = self.client.post('/upload/', {'file': SimpleUploadedFile('ok.bin', b'x' * 1024)})
        self.assertEqual(at_limit.status_code, 200)
        over = self.client.post('/upload/', {'file': SimpleUploadedFile('no.bin', b'x' * 1025)})
        self.assertEqual(over.status_code, 413)
        self.assertContains(over, 'at most 1.0\xa0KB is allowed', status_code=413)
        self.assertEqual([p.name for p in (self.media_root / 'uploads').iterdir()], ['ok.bin'])

    def test_allows_25_mib(self):
        self.assertEqual(settings.BOARD_UPLOAD_MAX_SIZE, 25 * 1024 * 1024)
        self.assertLess(settings.FILE_UPLOAD_MAX_MEMORY_SIZE, 20 * 1024 * 1024)


class AttachmentTests(MediaRootTestCase):
    def post_with(self, name, data):
        return Post.objects.create(title='t', attachment=SimpleUploadedFile(name, data))

    def test_streamed_without_a_front(self):
        post = self.post_with('report.txt', b'report contents\n')
        response = self.client.get(f'/posts/{post.pk}/attachment/')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(b''.join(response.streaming_content), b'report contents\n')
        self.assertEqual(response['Content-Disposition'], 'attachment; filename="report.txt"')
        self.assertNotIn('X-Accel-Redirect', response)

    @override_settings(BOARD_X_ACCEL_PREFIX='/protected/')
    def test_named_to_the_front(self):
        post = self.post_with('a report é.pdf', b'%PDF-1.4 not really\n')
        response = self.client.get(f'/posts/{post.pk}/attachment/')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b'')
        self.assertEqual(response['Content-Type'], 'application/pdf')
        name = post.attachment.name
        self.assertTrue(name.startswith('posts/'))
        quoted = name.replace(' ', '%20').replace('é', '%C3%A9')
        self.assertEqual(response['X-Accel-Redirect'], '/protected/' + quoted)
        self.assertEqual(response['Content-Disposition'],
                         "attachment; filename*=UTF-8''" + quoted.rsplit('/', 1)[1])

    def test_the_board_links_the_view(self):
        post = self.post_with('note.txt', b'x')
        self.assertContains(self.client.get('/'), f'href="/posts/{post.pk}/attachment/"')

    def test_missing(self):
        self.assertEqual(self.client.get('/posts/999/attachment/').status_code, 404)
        post = Post.objects.create(title='no file')
        self.assertEqual(self.client.get(f'/posts/{post.pk}/attachment/').status_code, 404)
        self.assertEqual(self.client.post(f'/posts/{post.pk}/attachment/').status_code, 405)


class EchoTests(TestCase):
    def test_get(self):
        response = self.client.get('/echo/?a=1&b=two', HTTP_X_TEST_HEADER='yes')
        self.assertEqual(response.status_code, 200)
        echo = response.json()
        self.assertEqual(echo['REQUEST_METHOD'], 'GET')
        self.assertEqual(echo['PATH_INFO'], '/echo/')
        self.assertEqual(echo['SCRIPT_NAME'], '')
        self.assertEqual(echo['QUERY_STRING'], 'a=1&b=two')
        self.assertEqual(echo['SERVER_NAME'], 'testserver')
        self.assertEqual(echo['SERVER_PORT'], '80')
        self.assertEqual(echo['SERVER_PROTOCOL'], 'HTTP/1.1')
        self.assertEqual(echo['REMOTE_ADDR'], '127.0.0.1')
        self.assertEqual(echo['wsgi.url_scheme'], 'http')
        self.assertEqual(echo['HTTP_X_TEST_HEADER'], 'yes')
        self.assertEqual(echo['body_length'], 0)
        self.assertEqual(echo['body_sha256'], hashlib.sha256(b'').hexdigest())
        self.assertEqual(echo['pid'], os.getpid())
        self.assertIn('CONTENT_TYPE', echo)
        self.assertIn('CONTENT_LENGTH', echo)

    def test_post_body_without_csrf_token(self):
        body = b'{"some": "json"}' * 1000
        client = Client(enforce_csrf_checks=True)
        response = client.post('/echo/', body, content_type='application/json')
        self.assertEqual(response.status_code, 200)
        echo = response.json()
        self.assertEqual(echo['REQUEST_METHOD'], 'POST')
        self.assertEqual(echo['CONTENT_TYPE'], 'application/json')
        self.assertEqual(echo['CONTENT_LENGTH'], str(len(body)))
        self.assertEqual(echo['body_length'], len(body))
        self.assertEqual(echo['body_sha256'], hashlib.sha256(body).hexdigest())

    def test_body_above_the_memory_limit(self):
        # Read in chunks, not as request.body: DATA_UPLOAD_MAX_MEMORY_SIZE does not apply.
        body = os.urandom(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
        response = self.client.put('/echo/', body, content_type='application/octet-stream')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()['body_length'], len(body))
        self.assertEqual(response.json()['body_sha256'], hashlib.sha256(body).hexdigest())

    def test_reports_exactly_the_wsgi_keys_and_headers(self):
        echo = self.client.get('/echo/', HTTP_ACCEPT='*/*').json()
        headers = {key for key in echo if key.startswith('HTTP_')}
        self.assertIn('HTTP_ACCEPT', headers)
        self.assertEqual(set(echo) - headers,
                         set(ECHO_KEYS) | {'body_length', 'body_sha256', 'pid'})

    def test_header_values_are_reported_as_given(self):
        # A WSGI server decodes header bytes as latin-1: any of them is valid JSON.
        value = ''.join(map(chr, range(0x20, 0x7f))) + 'caf\u00e9 \u00ff'
        response = self.client.get('/echo/', HTTP_X_ODD=value)
        self.assertEqual(json.loads(response.content)['HTTP_X_ODD'], value)


class AdminTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        get_user_model().objects.create_superuser('demo', 'demo@example.com', 'demo-password-1')

    def test_login_page(self):
        response = self.client.get('/admin/login/')
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, 'name="csrfmiddlewaretoken"')
        self.assertContains(response, '/static/admin/css/base.css')

    def test_index_redirects_to_login(self):
        response = self.client.get('/admin/')
        self.assertEqual(response.status_code, 302)
        self.assertEqual(response['Location'], '/admin/login/?next=/admin/')

    def test_login_through_the_form(self):
        client = Client(enforce_csrf_checks=True)
        token = CSRF_INPUT.search(client.get('/admin/login/').content.decode()).group(1)
        response = client.post('/admin/login/?next=/admin/', {
            'csrfmiddlewaretoken': token,
            'username': 'demo',
            'password': 'demo-password-1',
            'next': '/admin/',
        })
        self.assertEqual(response.status_code, 302)
        self.assertEqual(response['Location'], '/admin/')
        self.assertContains(client.get('/admin/'), 'Posts')

    def test_wrong_password(self):
        response = self.client.post('/admin/login/', {'username': 'demo', 'password': 'wrong'})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, 'Please enter the correct username and password')

    def test_post_admin(self):
        Post.objects.create(title='visible in the admin')
        self.client.force_login(get_user_model().objects.get(username='demo'))
        response = self.client.get('/admin/board/post/')
        self.assertContains(response, 'visible in the admin')
        self.assertEqual(self.client.get('/admin/board/post/add/').status_code, 200)


class CollectstaticTests(TestCase):
    def test_collects_the_site_and_admin_files(self):
        with tempfile.TemporaryDirectory(prefix='dj-board-static-') as root:
            with override_settings(STATIC_ROOT=root):
                call_command('collectstatic', interactive=False, verbosity=0)
            self.assertTrue(Path(root, 'admin', 'css', 'base.css').is_file())
            self.assertEqual(Path(root, 'css', 'site.css').read_bytes(),
                             (settings.BASE_DIR / 'static' / 'css' / 'site.css').read_bytes())


class SettingsTests(TestCase):
    def test_unknown_host_is_refused(self):
        with self.assertLogs('django.security.DisallowedHost', 'ERROR'):
            response = self.client.get('/hello/', HTTP_HOST='evil.example')
        self.assertEqual(response.status_code, 400)

    def test_known_hosts_with_ports(self):
        for host in ('localhost:8000', '127.0.0.1:8080', '[::1]:80', 'localhost'):
            with self.subTest(host=host):
                self.assertEqual(self.client.get('/hello/', HTTP_HOST=host).status_code, 200)

    def test_cookies_work_over_plain_http(self):
        response = self.client.get('/posts/new/')
        self.assertFalse(response.cookies[settings.CSRF_COOKIE_NAME]['secure'])

    def test_unknown_path(self):
        self.assertEqual(self.client.get('/no/such/page/').status_code, 404)

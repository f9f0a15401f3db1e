from django.urls import path

from . import views

app_name = 'board'

urlpatterns = [
    path('', views.index, name='index'),
    path('api/posts/', views.api_posts, name='api_posts'),
    path('hello/', views.hello, name='hello'),
    path('posts/new/', views.new_post, name='new_post'),
    path('upload/', views.upload, name='upload'),
    path('posts/<int:pk>/attachment/', views.attachment, name='attachment'),
    path('echo/', views.echo, name='echo'),
]

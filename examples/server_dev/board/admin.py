from django.contrib import admin

from .models import Post


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ('title', 'created', 'attachment')
    search_fields = ('title', 'body')
    date_hierarchy = 'created'
    readonly_fields = ('created',)

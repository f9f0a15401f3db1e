#!/bin/sh
# Prepares the server_dev example to be served, and can be run again at any
# time (it only does what is not done yet):
#   - applies the migrations (creates db.sqlite3),
#   - collects the static files, the admin's included, into static_root/,
#   - makes sure the superuser "demo" exists.
#
# Usage: ./prepare.sh [PASSWORD]
#
# The password of "demo" is PASSWORD, else $DJANGO_SUPERUSER_PASSWORD (which
# keeps it out of `ps`); when "demo" exists already, it is set to that one,
# and left as it is when neither is given. A new "demo" without either gets a
# generated password, printed once.
#
# The settings read DJANGO_DATABASE_PATH, DJANGO_STATIC_ROOT and
# DJANGO_MEDIA_ROOT from the environment (see server_dev/settings.py).
set -eu

PYTHON=/usr/bin/python3
USERNAME=demo

if [ $# -gt 1 ]; then
        echo "usage: $0 [PASSWORD]" >&2
        exit 2
fi

cd "$(dirname "$0")"

manage() {
        "$PYTHON" manage.py "$@"
}

manage migrate --noinput
manage collectstatic --noinput
# MEDIA_ROOT exists before the first upload: a front may serve it from the start.
manage shell -c "
import os
from django.conf import settings
os.makedirs(settings.MEDIA_ROOT, mode=0o755, exist_ok=True)
"

password=${1:-${DJANGO_SUPERUSER_PASSWORD:-}}
exists=$(manage shell -c "
from django.contrib.auth import get_user_model
print(get_user_model().objects.filter(username='$USERNAME').exists())
")

if [ "$exists" = False ]; then
        generated=
        if [ -z "$password" ]; then
                password=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(12))')
                generated=yes
        fi
        DJANGO_SUPERUSER_PASSWORD=$password \
                manage createsuperuser --noinput --username "$USERNAME" --email "$USERNAME@example.com"
        if [ -n "$generated" ]; then
                echo "Superuser \"$USERNAME\" has the password: $password"
        fi
elif [ -n "$password" ]; then
        DJANGO_SUPERUSER_PASSWORD=$password manage shell -c "
import os
from django.contrib.auth import get_user_model
user = get_user_model().objects.get(username='$USERNAME')
user.set_password(os.environ['DJANGO_SUPERUSER_PASSWORD'])
user.is_active = user.is_staff = user.is_superuser = True
user.save()
"
        echo "Superuser \"$USERNAME\" exists; its password was set."
else
        echo "Superuser \"$USERNAME\" exists; its password is unchanged."
fi

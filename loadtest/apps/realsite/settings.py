"""A small Django site for the load tests: one view renders a template from a SQLite query."""

import os
import tempfile

SECRET_KEY = "wsgo-loadtest-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "realsite.urls"
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
# One database file per run directory, created by realsite.wsgi before the first request.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), f"wsgo-realsite-{os.getuid()}.sqlite3"),
        # Persistent connections, as production settings have them (one per worker thread).
        "CONN_MAX_AGE": 60,
    }
}
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [os.path.join(os.path.dirname(__file__), "templates")],
    "OPTIONS": {},
}]
USE_TZ = True

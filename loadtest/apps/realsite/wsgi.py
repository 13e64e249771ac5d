"""The Django site's WSGI application; creates its SQLite database on first import."""

import os
import sqlite3

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realsite.settings")

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

_db = settings.DATABASES["default"]["NAME"]
with sqlite3.connect(_db) as c:
    c.execute("CREATE TABLE IF NOT EXISTS product (id INTEGER PRIMARY KEY, name TEXT, price REAL, stock INTEGER)")
    if c.execute("SELECT COUNT(*) FROM product").fetchone()[0] == 0:
        c.executemany("INSERT INTO product VALUES (?, ?, ?, ?)",
                      [(i, f"product number {i}", i * 3.5, i % 7) for i in range(1, 201)])

from django.db import connection
from django.shortcuts import render


def products(request):
    # What a listing page does: a query for a few rows, a template around them.
    with connection.cursor() as cur:
        cur.execute("SELECT id, name, price, stock FROM product WHERE stock > %s ORDER BY id LIMIT 8", [0])
        rows = [{"id": r[0], "name": r[1], "price": r[2], "stock": r[3]} for r in cur.fetchall()]
    return render(request, "products.html", {"products": rows, "title": "Products"})

"""A Flask JSON endpoint that waits 2 ms, as if for a database: I/O-bound work, the GIL free."""

import time

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/api/orders")
def orders():
    time.sleep(0.002)
    return jsonify({"orders": [{"id": i, "total": i * 9.5, "status": "shipped"} for i in range(5)], "count": 5})


application = app

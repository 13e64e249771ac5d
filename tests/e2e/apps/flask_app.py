"""An ordinary Flask app, served unchanged with `wsgo --module flask_app:app`."""

import hashlib
import os
import time

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)


@app.route("/")
def index():
    return "Hello from Flask"


@app.route("/json", methods=["GET", "POST"])
def json_route():
    if request.method == "POST":
        data = request.get_json()
        return jsonify(received=data, doubled=[x * 2 for x in data["numbers"]])
    return jsonify(message="hi", args=request.args.to_dict())


@app.route("/form", methods=["POST"])
def form():
    return jsonify(name=request.form["name"], tags=request.form.getlist("tag"))


@app.route("/upload", methods=["POST"])
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(filename=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(), note=request.form.get("note"))


@app.route("/stream")
def stream():
    def gen():
        for i in range(5):
            yield f"line {i}\n"
            time.sleep(0.05)

    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.route("/cookies/set")
def set_cookie():
    resp = jsonify(ok=True)
    resp.set_cookie("flavour", "oatmeal")
    resp.set_cookie("session", "abc123", httponly=True)
    return resp


@app.route("/cookies/get")
def get_cookie():
    return jsonify(dict(request.cookies))


@app.route("/status/<int:code>")
def status(code):
    return f"status {code}", code


@app.route("/redirect")
def redirect_route():
    from flask import redirect

    return redirect("/json")


@app.route("/boom")
def boom():
    raise RuntimeError("flask view failed")


CALLS = {"counted": 0}


@app.route("/counted")
def counted():
    CALLS["counted"] += 1
    resp = app.response_class(f"counted {CALLS['counted']}", mimetype="text/plain")
    resp.headers["Cache-Control"] = "public, max-age=60"
    return resp


@app.route("/calls")
def calls():
    return {"counted": CALLS["counted"]}


@app.route("/download")
def download():
    from flask import send_file

    # With USE_X_SENDFILE, Flask names the file in X-Sendfile and sends no body: wsgo serves it.
    app.config["USE_X_SENDFILE"] = True
    return send_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "flask_app.py"), mimetype="text/x-python")

"""The app of the deployment tests (tests/e2e/test_deploy.py): a Flask app made by a factory, as
the Flask documentation recommends (`--module 'deploy_app:create_app()'`)."""

import os
import time

from flask import Flask, jsonify, request

LEAKED = []


def create_app(name="deploy", debug=False):
    app = Flask(name)
    app.config["GREETING"] = f"{name}:{debug}"

    @app.route("/pid")
    def pid():
        return str(os.getpid())

    @app.route("/greeting")
    def greeting():
        return app.config["GREETING"]

    @app.route("/environ")
    def environ():
        keys = ("REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT")
        return jsonify({k: request.environ.get(k) for k in keys})

    @app.route("/leak")
    def leak():
        # Touched pages count in the resident size.
        block = bytearray(int(request.args.get("mb", "50")) << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        LEAKED.append(block)
        return str(len(LEAKED))

    @app.route("/tz")
    def tz():
        # What Django's TIME_ZONE setting does at start.
        os.environ["TZ"] = "Asia/Tokyo"
        time.tzset()
        return time.strftime("%z")

    @app.route("/spin")
    def spin():
        # Flask turns an Exception into its 500 page; the timeout is not one.
        end = time.time() + 30
        while time.time() < end:
            pass
        return "not interrupted"

    return app

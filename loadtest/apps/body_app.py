"""The request-body benchmark's app (loadtest/body_read.py): reads wsgi.input as `how` says and
answers the number of bytes read."""


def application(environ, start_response):
    inp = environ["wsgi.input"]
    how = environ.get("QUERY_STRING", "")
    n = 0
    if how == "read":
        n = len(inp.read())
    elif how == "read-n":
        n = len(inp.read(int(environ.get("CONTENT_LENGTH") or 0)))
    elif how == "chunks":
        while True:
            piece = inp.read(65536)
            if not piece:
                break
            n += len(piece)
    elif how == "readline":
        while True:
            line = inp.readline()
            if not line:
                break
            n += len(line)
    body = str(n).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

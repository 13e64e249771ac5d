import hashlib
import json
import time

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt


def index(request):
    return HttpResponse("<h1>Hello from Django</h1>")


@csrf_exempt
def json_view(request):
    if request.method == "POST":
        data = json.loads(request.body)
        return JsonResponse({"received": data, "sum": sum(data["numbers"])})
    return JsonResponse({"message": "hi", "q": request.GET.get("q"), "scheme": request.scheme, "host": request.get_host()})


@csrf_exempt
def form(request):
    return JsonResponse({"name": request.POST["name"], "tags": request.POST.getlist("tag")})


@csrf_exempt
def upload(request):
    f = request.FILES["file"]
    data = f.read()
    return JsonResponse({"filename": f.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def stream(request):
    def gen():
        for i in range(5):
            yield f"line {i}\n"
            time.sleep(0.05)

    return StreamingHttpResponse(gen(), content_type="text/plain")


def set_cookie(request):
    resp = JsonResponse({"ok": True})
    resp.set_cookie("flavour", "chocolate")
    return resp


def get_cookie(request):
    return JsonResponse(dict(request.COOKIES))


def session_count(request):
    request.session["n"] = request.session.get("n", 0) + 1
    return JsonResponse({"n": request.session["n"]})


def boom(request):
    raise RuntimeError("django view failed")


def spin(request):
    # Runs until --request-timeout raises wsgo.RequestTimeoutException into it.
    end = time.time() + 30
    while time.time() < end:
        pass
    return HttpResponse("not interrupted")

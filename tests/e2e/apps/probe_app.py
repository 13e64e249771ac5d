"""What the app, and the processes it starts, inherit from the server (issue 12, item 5).

GET /probe answers JSON: the server process's socket descriptors that are not close-on-exec, the
internal environment variables it can see, and for each way of starting a process (subprocess
with close_fds=False, os.system, os.posix_spawn, the C library's popen) what the child reports:
its blocked and ignored signals, its scheduling policy, its socket descriptors, and its
environment; and the policy of a child forked by os.fork. GET /policy answers the scheduling
policy of the worker that runs it; GET /sleep sleeps for two seconds, and GET /sleeping says
whether a /sleep is under way."""

import ctypes
import ctypes.util
import fcntl
import json
import os
import subprocess
import tempfile
import threading
import time

# Run by /bin/sh: plain C programs report what they inherited (a Python child would report its
# own start-up, which ignores SIGPIPE).
CHILD = (
    "cat /proc/self/status; echo ==; ls -l /proc/self/fd; echo ==; "
    "grep '^policy' /proc/self/sched; echo ==; tr '\\0' '\\n' < /proc/self/environ"
)


SLEEPING = threading.Event()

# What the supervisor passes to its processes.
INTERNAL = {"WSGO_LISTEN_FDS", "WSGO_READY_FD"}


def parse(text):
    status, fds, sched, env = text.split("==\n")
    fields = dict(l.split(":", 1) for l in status.splitlines() if ":" in l)
    return {
        "sigblk": int(fields["SigBlk"].strip(), 16),
        "sigign": int(fields["SigIgn"].strip(), 16),
        "policy": int(sched.split(":")[1]),
        "sockets": [l for l in fds.splitlines() if "socket:" in l],
        "wsgo_env": sorted(k for k in (l.split("=")[0] for l in env.splitlines()) if k in INTERNAL),
    }


def inheritable_sockets():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
            flags = fcntl.fcntl(int(fd), fcntl.F_GETFD)
        except OSError:
            continue
        if target.startswith("socket:") and not flags & fcntl.FD_CLOEXEC:
            out.append((int(fd), target))
    return out


def children():
    found = {}
    out = subprocess.run(["/bin/sh", "-c", CHILD], close_fds=False, capture_output=True, check=True).stdout
    found["subprocess"] = parse(out.decode())
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
        os.system("(%s) > %s" % (CHILD, out.name))
        found["os.system"] = parse(open(out.name).read())
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", "(%s) > %s" % (CHILD, out.name)], os.environ)
        os.waitpid(pid, 0)
        found["os.posix_spawn"] = parse(open(out.name).read())
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.popen.restype = ctypes.c_void_p
    libc.popen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.pclose.argtypes = [ctypes.c_void_p]
    libc.fread.restype = ctypes.c_size_t
    libc.fread.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
    stream = libc.popen(CHILD.encode(), b"r")
    buf = ctypes.create_string_buffer(1 << 20)
    n = libc.fread(buf, 1, len(buf), stream)
    libc.pclose(stream)
    found["popen"] = parse(buf.raw[:n].decode())
    return found


def forked_policy():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, str(os.sched_getscheduler(0)).encode())
        os._exit(0)
    os.close(w)
    policy = int(os.read(r, 16))
    os.close(r)
    os.waitpid(pid, 0)
    return policy


def application(environ, start_response):
    if environ["PATH_INFO"] == "/probe":
        body = {
            "inheritable_sockets": inheritable_sockets(),
            "wsgo_env": sorted(k for k in os.environ if k in INTERNAL),
            "children": children(),
            "forked_policy": forked_policy(),
        }
        data = json.dumps(body).encode()
    elif environ["PATH_INFO"] == "/sleep":
        SLEEPING.set()
        time.sleep(2)
        SLEEPING.clear()
        data = b"slept"
    elif environ["PATH_INFO"] == "/sleeping":
        data = json.dumps(SLEEPING.is_set()).encode()
    elif environ["PATH_INFO"] == "/policy":
        data = json.dumps(os.sched_getscheduler(0)).encode()
    else:
        data = b"ok"
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]

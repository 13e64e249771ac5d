"""Long polling across processes and hosts: 500 clients wait on one channel, a notifier wakes
them in rounds, and every client must be woken every round, once.

Layouts: `one-host` (one wsgo, `--processes 2`: the clients land on both processes, the
notifier's request on either) and `two-hosts` (two wsgo instances, `--processes 1` each, sharing
through a Redis started here on a free loopback port; half the clients on each, the notifier
on the first). Each client keeps one connection and one request parked (loadtest/apps/
longpoll_app.py); when every request of the round is parked (the servers' `--metrics` say so),
the notifier sends `/notify?round=N`. Wake latency: from the notifier's request leaving to a
client's response arriving. Checked: every client answered once per round with that round's
number, no request lost, none woken twice.

Usage: loadtest/.venv/bin/python loadtest/longpoll.py [--clients 500] [--rounds 10]
       [--layouts one-host,two-hosts]
Prints a markdown table. Only 127.0.0.1; servers and Redis are stopped by process id.
"""

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

WAIT = b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"


def start(cmd, env=None):
    return subprocess.Popen(cmd, cwd=run.APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def parked(metrics_ports):
    total = 0
    for port in metrics_ports:
        try:
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return -1
        total += sum(int(float(v)) for v in re.findall(r"^wsgo_parked_requests\{[^}]*\} (\S+)$", page, re.M))
    return total


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    body = await reader.readexactly(length) if length else b""
    return int(head.split(b" ", 2)[1]), body


async def client(port, rounds, woken, errors, sent):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = []
    try:
        for _ in range(rounds):
            writer.write(WAIT)
            await writer.drain()
            sent[0] += 1
            status, body = await read_response(reader)
            t = time.perf_counter()
            if status != 200:
                errors.append(f"status {status}")
                return got
            arg, pid = body.decode().split()
            got.append(arg)
            woken.append((arg, t, pid))
    except (OSError, asyncio.IncompleteReadError) as e:
        errors.append(f"lost: {e!r}")
    finally:
        writer.close()
    return got


async def drive(ports, metrics_ports, clients, rounds):
    woken, errors, sent = [], [], [0]
    # With two hosts the first client (the only one when measuring a single wake) waits on the
    # second host, the notifier uses the first.
    tasks = [asyncio.create_task(client(ports[(i + 1) % len(ports)], rounds, woken, errors, sent)) for i in range(clients)]
    notify_at, notifier = {}, {}
    for r in range(1, rounds + 1):
        deadline = time.monotonic() + 30
        while sent[0] < clients * r and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # Sent is not parked yet: give the servers time, and wait for their count (sampled
        # every second) to say so.
        await asyncio.sleep(0.3)
        while parked(metrics_ports) < clients and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[0])
        notify_at[str(r)] = time.perf_counter()
        writer.write(f"GET /notify?round={r} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        _, body = await read_response(reader)
        notifier[str(r)] = body.decode().split()[1]
        writer.close()
        deadline = time.monotonic() + 30
        while sum(1 for w in woken if w[0] == str(r)) < clients and time.monotonic() < deadline and not errors:
            await asyncio.sleep(0.01)
    results = await asyncio.gather(*tasks)
    expected = [str(r) for r in range(1, rounds + 1)]
    wrong = sum(1 for got in results if got != expected)
    latencies = [(t - notify_at[arg]) * 1000 for arg, t, _ in woken if arg in notify_at]
    # Woken by a notification from another process (or host): through the supervisor (or Redis).
    relayed = [(t - notify_at[arg]) * 1000 for arg, t, pid in woken if arg in notify_at and pid != notifier[arg]]
    return latencies, relayed, wrong, errors


def one_layout(layout, clients, rounds, libdir):
    ours = os.environ.get("WSGO_BIN", str(run.ROOT / "target" / "release" / "wsgo"))
    env = dict(os.environ, VIRTUAL_ENV=str(run.VENV), PATH=f"{run.VENV}/bin:{os.environ['PATH']}",
               LD_LIBRARY_PATH=libdir)
    procs, ports, metrics = [], [], []
    redis = None
    try:
        hosts = 1 if layout == "one-host" else 2
        extra = []
        if hosts == 2:
            rport = run.free_port()
            redis = start([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(rport), "--bind",
                           "127.0.0.1", "--save", "", "--appendonly", "no"])
            extra = ["--redis", f"redis://127.0.0.1:{rport}/"]
            time.sleep(0.5)
        for _ in range(hosts):
            port, mport = run.free_port(), run.free_port()
            cmd = [ours, "--module", "longpoll_app", "--http-socket", f"127.0.0.1:{port}", "--workers", "16",
                   "--processes", "2" if hosts == 1 else "1", "--metrics", f"127.0.0.1:{mport}", *extra]
            procs.append(start(cmd, env))
            ports.append(port)
            metrics.append(mport)
        for p, port in zip(procs, ports):
            run.wait_ready(port, "/", p)
        time.sleep(1.5 if hosts == 2 else 0.2)  # subscribed to Redis
        latencies, relayed, wrong, errors = asyncio.run(drive(ports, metrics, clients, rounds))
    finally:
        for p in procs:
            run.stop(p, 20)
        if redis:
            run.stop(redis)
    def pct(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {"layout": layout, "clients": clients, "wakes": len(latencies), "expected": clients * rounds,
            "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "max": max(latencies, default=float("nan")),
            "relayed": len(relayed), "relayed_p50": pct(relayed, 0.5), "relayed_p99": pct(relayed, 0.99),
            "wrong": wrong, "errors": len(errors), "first_error": errors[0] if errors else ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--single-rounds", type=int, default=100, help="rounds with one waiting client")
    ap.add_argument("--layouts", default="one-host,two-hosts")
    args = ap.parse_args()
    libdir = run.python_libdir()
    rows = []
    for layout in args.layouts.split(","):
        rows.append(one_layout(layout, args.clients, args.rounds, libdir))
        # One waiting client, many rounds: the latency of the relay itself, not of answering 500.
        rows.append(one_layout(layout, 1, args.single_rounds, libdir))
    print("Wake latency: from the notifier's request leaving to a client's response arriving; "
          "\"relayed\": the wakes of requests parked in another process (one host) or on another host "
          "(two hosts) than the one that ran notify_parked\n")
    print("| layout | clients | wakes (expected) | p50 ms | p99 ms | max ms | relayed wakes | relayed p50 ms | "
          "relayed p99 ms | clients with a wrong sequence | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['clients']} | {r['wakes']} ({r['expected']}) | {r['p50']:.1f} | {r['p99']:.1f} | "
              f"{r['max']:.1f} | {r['relayed']} | {r['relayed_p50']:.1f} | {r['relayed_p99']:.1f} | {r['wrong']} | "
              f"{r['errors']}{(' ' + r['first_error']) if r['errors'] else ''} |")


if __name__ == "__main__":
    main()

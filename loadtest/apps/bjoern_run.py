"""Runs bench_app under bjoern (which has no command line of its own): `bjoern_run.py PORT
[PROCESSES]`. bjoern is single-threaded; on all cores it runs one process per CPU, each with its
own SO_REUSEPORT socket, as its README suggests for multi-core hosts."""

import os
import sys

import bjoern

from bench_app import application

port = int(sys.argv[1])
processes = int(sys.argv[2]) if len(sys.argv) > 2 else 1
children = []
for _ in range(processes - 1):
    pid = os.fork()
    if pid == 0:
        children = []
        break
    children.append(pid)
bjoern.run(application, "127.0.0.1", port, reuse_port=True)

"""Runs an app under bjoern (which has no command line of its own): `bjoern_run.py PORT
[PROCESSES [MODULE:CALLABLE]]`. bjoern is single-threaded; on all cores it runs one process per
CPU, each with its own SO_REUSEPORT socket, as its README suggests for multi-core hosts."""

import importlib
import os
import sys

import bjoern

port = int(sys.argv[1])
processes = int(sys.argv[2]) if len(sys.argv) > 2 else 1
module, callable_ = (sys.argv[3] if len(sys.argv) > 3 else "bench_app:application").split(":")
sys.path.insert(0, os.getcwd())
application = getattr(importlib.import_module(module), callable_)
for _ in range(processes - 1):
    if os.fork() == 0:
        break
bjoern.run(application, "127.0.0.1", port, reuse_port=True)

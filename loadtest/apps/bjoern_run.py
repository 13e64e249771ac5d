"""Runs bench_app under bjoern (which has no command line of its own)."""

import sys

import bjoern

from bench_app import application

bjoern.run(application, "127.0.0.1", int(sys.argv[1]))

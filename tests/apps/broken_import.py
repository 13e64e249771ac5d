"""A module that fails while importing: the server must print the traceback and refuse to start."""

raise ImportError("this module is broken on purpose")

"""A module without an `application`: the server must refuse to start."""

something_else = 1

"""The base of every error a user can fix: the CLI prints it as one line and exits 2."""


class LipkitError(Exception):
    """A problem with the user's input (config, data, run directory), stated in one line."""


class UsageError(LipkitError, ValueError):
    """A command-line argument that cannot be used."""

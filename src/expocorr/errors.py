"""The base of every error caused by the user's input (params, files, data)."""


class UserError(Exception):
    """Bad input; the message names the key, file or folder. The CLI prints it as one line."""

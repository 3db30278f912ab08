"""The base of every error caused by the user's input (params, files, data)."""


class UserError(Exception):
    """Bad input; the message names the key, file or folder. The CLI prints it as one line."""


def printable(name) -> str:
    """A file name, key or URI as messages show it: as is, or repr-quoted when it holds a newline or other
    unprintable character (which could forge a log line)."""
    text = str(name)
    return text if text.isprintable() else repr(text)

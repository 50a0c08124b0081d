"""The one error class a user sees as one sentence (bad params or input), and its params kind."""


class InputError(Exception):
    """Bad params or input: the message names the key, file, row or field, so a stage shows it as one
    sentence, without a traceback (SATORI_DEBUG=1 shows the traceback too)."""


class ParamsError(InputError, ValueError):
    """params.yaml is missing a key, has an unknown one, or a value of the wrong type."""

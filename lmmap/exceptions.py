"""The error users see: a message that names the file, line or model and says what to do."""


class LmmapError(ValueError):
    """Bad input or a refused operation. The CLI prints its message without a traceback."""

"""The one exception tree of lmmap, and its one warning class.

Every error a user can cause is an :class:`LmmapError`; its message names the
file, line, model or parameter at fault and says what to do. The CLI prints
such a message on one line (exit code 1); anything else that escapes is a bug
and is reported as one (``internal error``, exit code 2).

    LmmapError (ValueError)
      InputError      a bad argument or value (a parameter, a name, a number)
      FormatError     a file that cannot be read as what it claims to be
        MissingFileError  a file or folder the user named does not exist (also a FileNotFoundError)
      StoreError      a store that is missing, inconsistent, or refuses a change
        StoreExistsError  a store created where one already is (also a FileExistsError)
      ScoringError    a model that cannot be loaded or scored
        NonFiniteError  a NaN or infinite log-likelihood

    Interrupted (KeyboardInterrupt)   Ctrl-C, saying what was kept

``LmmapError`` derives from ``ValueError`` so that ``except ValueError`` in
callers written against numpy/scikit-learn conventions still catches bad input.

Library messages name the Python parameter at fault (``random_state must be
...``), and list it in ``params``; the command line prints the flag instead
(``--seed must be ...``), so a notebook user and a shell user each read their
own names.

:class:`LmmapWarning` carries notes the user should see once (partial models
left out of a map, metadata for absent models ...); the CLI prints each as a
one-line ``note:``.
"""

from __future__ import annotations


class LmmapError(ValueError):
    """Bad input or a refused operation. The CLI prints its message without a traceback.

    ``params``: the Python parameters the message concerns. The CLI shows a
    message that begins with one of them, and every mention of one in braces
    (``pass {allow_pickle=True}``), with the flag instead (:func:`lmmap.params.cli_message`);
    ``str(exc)`` shows a mention without its braces (``pass allow_pickle=True``).
    """

    def __init__(self, *args, params: tuple[str, ...] | list[str] = ()):
        super().__init__(*args)
        self.params = tuple(params)

    def __str__(self) -> str:
        from lmmap.params import python_message  # lmmap.params imports this module

        return python_message(super().__str__(), self.params)


class InputError(LmmapError):
    """A bad argument or value."""


class FormatError(LmmapError):
    """A file that cannot be read as what it claims to be."""


class StoreError(LmmapError):
    """A store that is missing or inconsistent, or that refuses a change."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist (still a ``FileNotFoundError`` for callers that catch one)."""


class StoreExistsError(StoreError, FileExistsError):
    """A store created where one already is (still a ``FileExistsError`` for callers that catch one)."""


class ScoringError(LmmapError):
    """A model that cannot be loaded or scored."""


class NonFiniteError(ScoringError):
    """A model produced NaN or ±inf for a text (SPEC §2: an error, never a stored number); ``position`` names the
    text (None when unknown)."""

    def __init__(self, message: str, position: int | None = None, *, params: tuple[str, ...] | list[str] = ()):
        super().__init__(message, params=params)
        self.position = position


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a sentence saying what was kept (``str(exc)``); the CLI prints it and exits 130.

    A :class:`KeyboardInterrupt`, not an :class:`LmmapError`: code that cleans up on Ctrl-C (``except
    KeyboardInterrupt``, ``finally``) must see it as one, and an ``except Exception`` must not swallow it.
    """

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class LmmapWarning(UserWarning):
    """A note for the user (printed once, on one line, by the CLI).

    ``warnings.warn(LmmapWarning(msg, params=("subset",)), stacklevel=2)`` lets
    the CLI show flags for the parameters the note names, as for errors.
    """

    def __init__(self, *args, params: tuple[str, ...] | list[str] = ()):
        super().__init__(*args)
        self.params = tuple(params)

    def __str__(self) -> str:
        from lmmap.params import python_message

        return python_message(super().__str__(), self.params)

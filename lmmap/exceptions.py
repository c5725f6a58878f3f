"""The one exception tree of lmmap, and its one warning class.

Every error a user can cause is an :class:`LmmapError`; its message names the
file, line, model or parameter at fault and says what to do. The CLI prints
such a message on one line (exit code 1); anything else that escapes is a bug
and is reported as one (``internal error``, exit code 2).

    LmmapError (ValueError)
      InputError      a bad argument or value (a parameter, a name, a number)
      FormatError     a file that cannot be read as what it claims to be
      StoreError      a store that is missing, inconsistent, or refuses a change
      ScoringError    a model that cannot be loaded or scored
        NonFiniteError  a NaN or infinite log-likelihood

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

    ``params``: the Python parameter names the message mentions (the CLI
    replaces each whole-word mention by the command's flag).
    """

    def __init__(self, *args, params: tuple[str, ...] | list[str] = ()):
        super().__init__(*args)
        self.params = tuple(params)


class InputError(LmmapError):
    """A bad argument or value."""


class FormatError(LmmapError):
    """A file that cannot be read as what it claims to be."""


class StoreError(LmmapError):
    """A store that is missing or inconsistent, or that refuses a change."""


class ScoringError(LmmapError):
    """A model that cannot be loaded or scored."""


class NonFiniteError(ScoringError):
    """A NaN or infinite log-likelihood."""


class LmmapWarning(UserWarning):
    """A note for the user (printed once, on one line, by the CLI).

    ``warnings.warn(LmmapWarning(msg, params=("subset",)), stacklevel=2)`` lets
    the CLI show flags for the parameters the note names, as for errors.
    """

    def __init__(self, *args, params: tuple[str, ...] | list[str] = ()):
        super().__init__(*args)
        self.params = tuple(params)

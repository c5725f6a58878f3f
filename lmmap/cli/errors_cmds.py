"""Commands of this capability register themselves on the shared app."""

from ._app import app  # noqa: F401

"""lynx's error classes: what the user can fix, told apart from bugs.

Why a base class: the command line prints a :class:`LynxError` as one line with status 2 and
lets anything else surface as a traceback, so a bug (a ``KeyError`` deep inside) is never
disguised as bad input. Each class also derives from the built-in error it refines
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so library callers that catch those
keep working.
"""

from __future__ import annotations


class LynxError(Exception):
    """A problem the user can fix (bad input, a missing or mismatched artifact, an engine that
    is not installed); its message says what is wrong and how to fix it, in one line."""


class InvalidInput(LynxError, ValueError):
    """A value, option or file content that lynx cannot use."""


class MissingInput(LynxError, FileNotFoundError):
    """A file or folder that should exist does not."""


class EngineUnavailable(LynxError, RuntimeError):
    """An inference engine that is not installed or cannot start here."""

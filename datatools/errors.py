"""Errors a user can cause. The CLI prints their message as ``Error: ...`` and exits 2.

Every class also inherits the builtin it refines, so ``except FileNotFoundError`` still works::

    DatatoolsError (Exception)
    ├── InputNotFoundError (FileNotFoundError)   a named input does not exist
    ├── InputError (ValueError)                  an input exists but cannot be used as asked
    │   └── UnsupportedInputError                no source kind can open it
    ├── OptionError (ValueError)                 an option value is invalid
    │   └── RoiError                             a region of interest does not fit the volume
    ├── TargetError (FileExistsError)            the output location cannot be used
    │   └── ResumeMismatchError                  a rerun asks for different options
    └── WriteError (OSError)                     writing failed (disk full, permission denied)

Messages are one line: ``<path or option>: <problem> (<hint>)``.
"""

from __future__ import annotations


class DatatoolsError(Exception):
    """Base of every error a user can cause; the CLI shows its message and exits 2."""


class InputNotFoundError(DatatoolsError, FileNotFoundError):
    """A named input file or folder does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InputError(DatatoolsError, ValueError):
    """An input exists but cannot be used as asked (corrupt, inconsistent, wrong dtype)."""


class UnsupportedInputError(InputError):
    """No source kind can open the input; the message lists what was tried."""


class OptionError(DatatoolsError, ValueError):
    """An option value is invalid (chunks, codec, size, dtype cast)."""


class RoiError(OptionError):
    """A region of interest is empty, inverted, outside the volume or has the wrong axes."""


class TargetError(DatatoolsError, FileExistsError):
    """The output location cannot be used (exists and is not ours, is a file, no parent)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ResumeMismatchError(TargetError):
    """A rerun into an unfinished output asks for different options than the first run."""


class WriteError(DatatoolsError, OSError):
    """Writing the output failed (disk full, permission denied); what was written stays."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message (its type name if it has none), for
    one-line messages that quote a third-party error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__

"""The access token `flowsh serve` uses when it is given none: made once, kept in a file
only its owner can read, as Jupyter does.

Loopback is not private: every account of the machine can connect to 127.0.0.1. So the
server always wants a token; the default one lives in `$FLOWSH_HOME/ui-token`, created
0600 with O_EXCL (never world-readable, not for an instant) and reused on the next start
only if it is still the user's own file, mode 0600.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from flowsh.errors import UsageError
from flowsh.ownfile import NotOwn, make_once, read_own
from flowsh.state import ensure_private_dir

TOKEN_NAME = "ui-token"
TOKEN_BYTES = 32  # secrets.token_urlsafe: 43 characters, 256 bits
MIN_LENGTH = 16


def check_token(token: str, source: str) -> str:
    """A token as given (FLOWSH_UI_TOKEN, --token-file, a hand-edited ui-token): printable
    ASCII, since HTTP headers carry Latin-1 at most and a browser's URL encoding varies
    (a `€` would match nowhere), and long enough not to be guessed."""
    if not all(" " <= c <= "~" for c in token):
        raise UsageError(f"{source}: the UI token must be printable ASCII characters only")
    if len(token) < MIN_LENGTH:
        raise UsageError(f"{source}: the UI token is {len(token)} characters; use at least "
                         f"{MIN_LENGTH} (e.g. python3 -c 'import secrets; "
                         "print(secrets.token_urlsafe())')")
    return token


def default_token(home: Path) -> tuple[str, Path]:
    """The token in `home/ui-token`, made now if there is none; and the file's path."""
    ensure_private_dir(home)
    path = home / TOKEN_NAME
    try:
        return check_token(_read_own(path), str(path)), path
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    if not make_once(path, token + "\n"):  # a second server starting now won: its token
        return check_token(_read_own(path), str(path)), path
    return token, path


def _read_own(path: Path) -> str:
    """The token in `path`, if the file is a regular file of ours, mode 0600; else refused
    (another account could have planted it, or could read it)."""
    advice = "delete it and start again (a new token is made)"
    try:
        token = read_own(path)
    except NotOwn as exc:
        if not exc.opened:
            raise UsageError(f"{path}: {exc}: {advice}") from None
        raise UsageError(f"{path}: the UI token file must be a file of yours with mode 0600 "
                         f"({exc}): {advice}") from None
    if not token:
        raise UsageError(f"{path}: the UI token file is empty: delete it and start again")
    return token

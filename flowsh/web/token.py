"""The access token `flowsh serve` uses when it is given none: made once, kept in a file
only its owner can read, as Jupyter does.

Loopback is not private: every account of the machine can connect to 127.0.0.1. So the
server always wants a token; the default one lives in `$FLOWSH_HOME/ui-token`, created
0600 with O_EXCL (never world-readable, not for an instant) and reused on the next start
only if it is still the user's own file, mode 0600.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from flowsh.errors import UsageError
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
    # Written whole under a private name, then linked into place: a second server starting
    # at the same moment reads either no file or a complete one, never a half-written one.
    tmp = home / f".{TOKEN_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask says
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:  # the other server won: use its token
        return check_token(_read_own(path), str(path)), path
    finally:
        os.unlink(tmp)
    return token, path


def _read_own(path: Path) -> str:
    """The token in `path`, if the file is a regular file of ours, mode 0600; else refused
    (another account could have planted it, or could read it)."""
    try:
        # O_NONBLOCK: a FIFO planted there would block the open until someone writes to
        # it; so it opens at once, and the fstat below refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UsageError(f"{path}: {exc.strerror or exc}: delete it and start again "
                         "(a new token is made)") from None
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or mode != 0o600:
            raise UsageError(
                f"{path}: the UI token file must be a file of yours with mode 0600 (it is "
                f"{'not a regular file' if not stat.S_ISREG(st.st_mode) else oct(mode)[2:]}"
                f"{'' if st.st_uid == os.getuid() else f', owner uid {st.st_uid}'}): "
                "delete it and start again (a new token is made)")
        token = os.read(fd, 4096).decode("utf-8", errors="replace").strip()
    finally:
        os.close(fd)
    if not token:
        raise UsageError(f"{path}: the UI token file is empty: delete it and start again")
    return token

"""`flowsh serve`: the web UI and REST API over runs (flowsh/web, docs/ui.md)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from flowsh import hookimpl
from flowsh.errors import FlowshError, UsageError

if TYPE_CHECKING:
    import uvicorn

    from flowsh.web.config import ServeConfig

EXTRA_HINT = "pip install 'flowsh[ui]'"


def _token(token_file: Path | None) -> str | None:
    from flowsh.web.token import check_token

    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--token-file {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise UsageError(f"--token-file {token_file}: the file is empty")
        return check_token(token, f"--token-file {token_file}")
    given = os.environ.get("FLOWSH_UI_TOKEN")
    return check_token(given, "FLOWSH_UI_TOKEN") if given else None


def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8765, "--port", "-p", min=0, max=65535, help="Port (0: any free one)."),  # noqa: E501
    workflows: Optional[list[Path]] = typer.Option(  # noqa: UP045
        None, "--workflows", "-w", metavar="DIR",
        help="Directory of workflow files the UI may start (repeatable)."),
    token_file: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--token-file", metavar="FILE",
        help="File holding the access token (else $FLOWSH_UI_TOKEN, else the one made in "
             "$FLOWSH_HOME/ui-token)."),
    read_only: bool = typer.Option(False, "--read-only", help="No actions: look, never start or stop."),  # noqa: E501
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE", help="State URL."),  # noqa: UP045
) -> None:
    """Serve a web UI and REST API over runs: see what failed, read its log, resume it.

    Needs the `ui` extra (exit 2 without it). Binds 127.0.0.1 unless told otherwise. Always
    behind a token: without --token-file or $FLOWSH_UI_TOKEN it makes one, kept in
    $FLOWSH_HOME/ui-token (mode 0600), and prints the URL that logs a browser in. The API
    is described at /api/v1/openapi.json.
    """
    try:
        import uvicorn

        from flowsh.web.app import create_app
    except ImportError as exc:
        raise UsageError(f"flowsh serve needs the web UI's packages ({exc.name} is missing): "
                         f"{EXTRA_HINT}") from None
    from flowsh.store import open_backend
    from flowsh.web.config import ServeConfig
    from flowsh.web.data import Known

    dirs = list(workflows or [])
    for d in dirs:
        if not d.is_dir():
            raise UsageError(f"--workflows {d}: not a directory")
    token = _token(token_file)
    token_path = None
    if token is None:
        # Loopback is every local account's: a token always, as Jupyter does (docs/ui.md).
        from flowsh.state import flowsh_home
        from flowsh.web.token import default_token

        token, token_path = default_token(flowsh_home())
    open_backend(state).close()  # a bad --state is refused now, not on the first request
    from flowsh.web.config import is_loopback
    from flowsh.web.server import config, raise_fd_limit

    raise_fd_limit()
    sock = _listen(host, port)
    bound = sock.getsockname()
    # The Host check follows the address bound, whatever spelling named it (`127.1`).
    cfg = ServeConfig(state=state, known=Known([d.resolve() for d in dirs]), host=host,
                      port=bound[1], token=token, read_only=read_only,
                      loopback=is_loopback(host) or is_loopback(str(bound[0])))
    cfg.known.scan(max_age=0.0)
    server = uvicorn.Server(config(create_app(cfg), host, port))
    _announce(server, cfg, token_path)
    server.run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here: a port in use or an unknown host is one line
    (exit 1, as for other OS errors), not uvicorn's log and traceback."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        raise FlowshError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


def _announce(server: uvicorn.Server, cfg: ServeConfig, token_path: Path | None) -> None:
    """Print the URL once the socket is bound (with --port 0 the port is known only then)."""
    import threading
    import time

    def wait() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else cfg.port
        # Bound to every address: the machine's name is what another machine can open.
        host = socket.gethostname() if cfg.host in ("0.0.0.0", "::") else cfg.host
        shown = f"[{host}]" if ":" in host else host
        note = " (read-only)" if cfg.read_only else ""
        if token_path is not None:
            # The token this server made: the link to open, as Jupyter prints it (its file
            # is private; the terminal is the user's own).
            typer.echo(f"flowsh serve: http://{shown}:{port}/?token={cfg.token}{note}  "
                       f"(token in {token_path}; Ctrl-C stops)")
        else:
            # A token given to it is never printed (terminal scrollback, CI logs): its
            # holder adds it.
            typer.echo(f"flowsh serve: http://{shown}:{port}/?token=YOUR_TOKEN{note}  "
                       "(Ctrl-C stops)")

    threading.Thread(target=wait, daemon=True).start()


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)

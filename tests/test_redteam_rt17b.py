"""Red-team reproducers for `flowsh serve` after the token-by-default work (issue 17, round
b). Each FAILS on main at 8d62ffe ("Merge branch 'sel'").

Real server processes, real sockets on loopback (tests/web_helpers.py); PostgreSQL tests
use the machine's server as tests/test_state_postgresql.py does, and skip without it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web_helpers import Server, serve, wait_for

FLOW = """\
name: sec
params:
  WHO: world
steps:
  - name: show
    run: echo "who=$WHO"
"""


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    (d / "sec.yaml").write_text(FLOW)
    return d


@pytest.fixture
def srv(home: Path, flows: Path) -> Iterator[Server]:
    with serve(home, "--workflows", str(flows)) as server:
        yield server


def test_a_fifo_as_the_token_file_is_refused_not_waited_on(home: Path) -> None:
    """Severity: medium (denial of service; the documented one-line refusal never comes).

    docs/ui.md: a `ui-token` that is not a private file of yours exits 2 with one line.
    token._read_own opens `$FLOWSH_HOME/ui-token` with O_RDONLY|O_NOFOLLOW and only then
    fstat()s it: on a FIFO the open blocks until someone writes to it. Anyone who can
    write to a shared FLOWSH_HOME (a group-writable team directory, or the user's own
    `mkfifo` slip) plants one and `flowsh serve` hangs for ever: no port, no URL, no
    message. (A directory in its place is refused at once, as documented.)

    Observed: `flowsh serve` still running after 20 s, nothing printed.
    Expected: exit 2 with one line naming the file (open it O_NONBLOCK, or lstat first)."""
    home.mkdir(parents=True, exist_ok=True)
    os.mkfifo(home / "ui-token", 0o600)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "serve", "--port", "0"],
                            env={**os.environ, "FLOWSH_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"flowsh serve hangs on a FIFO at {home / 'ui-token'} "
                    f"(stdout {out!r}, stderr {err!r})")
    assert proc.returncode == 2, (out, err)
    assert "ui-token" in err and len(err.strip().splitlines()) == 1, err


def _established(local_port: int, remote_port: int) -> bool:
    """Whether /proc/net/tcp (readable by every account) has an ESTABLISHED socket
    127.0.0.1:local_port <-> 127.0.0.1:remote_port: the server's end of a connection."""
    want_local, want_remote = f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}"
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            parts = line.split()
            if parts[1] == want_local and parts[2] == want_remote and parts[3] == "01":
                return True
    return False


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs /proc/net/tcp")
def test_a_client_that_never_reads_is_not_kept_for_ever(srv: Server) -> None:
    """Severity: medium (denial of service by any local account, no token needed).

    server.py promises "idle and slow clients cannot hold the server's connections for
    ever", but its deadline only covers *receiving* a request: once a request is in
    (h11 their_state DONE) `_expired` leaves the connection alone. A client that pipelines
    requests and never reads the answers fills the socket buffers; uvicorn then waits in
    its write-flow-control drain for ever and the connection (a file descriptor and
    several MiB of kernel buffers) is never freed. Unauthenticated requests are enough:
    the 400 for a foreign Host echoes the (16 KiB) Host back, so one connection costs the
    attacker ~8 MB of writes and ~1.5 s; repeated, the server runs out of descriptors,
    exactly the lock-out the deadline was added against (slow-read, not slowloris).

    Observed: the server's end of the connection is still ESTABLISHED 35 s after the
    client stopped (REQUEST_DEADLINE is 10 s, KEEP_ALIVE 5 s).
    Expected: a connection whose responses are not being read within the deadline is
    aborted (transport.abort())."""
    from flowsh.web.server import KEEP_ALIVE, REQUEST_DEADLINE

    port = int(srv.url.rsplit(":", 1)[1])
    request = b"GET / HTTP/1.1\r\nHost: " + b"A" * 12000 + b"\r\n\r\n"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    try:
        mine = sock.getsockname()[1]
        stuck_since: float | None = None
        end = time.monotonic() + 60
        while time.monotonic() < end:  # until the server stops taking our bytes
            try:
                sock.send(request)
                stuck_since = None
            except BlockingIOError:
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since > 1.0:
                    break
                time.sleep(0.05)
        assert _established(port, mine), "the server already closed it while we wrote"
        limit = REQUEST_DEADLINE + KEEP_ALIVE + 20
        t0 = time.monotonic()
        while _established(port, mine) and time.monotonic() - t0 < limit:
            time.sleep(0.5)
        assert not _established(port, mine), (
            f"the server still holds a connection whose client has not read for "
            f"{time.monotonic() - t0:.0f} s")
    finally:
        sock.close()


PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_SERVER, connect_timeout=3).close()
    except psycopg.Error:
        pytest.skip(f"no PostgreSQL at {PG_SERVER}")
    schema = f"flowsh_rt17b_{uuid.uuid4().hex[:12]}"
    yield f"{PG_SERVER}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_nul_in_a_run_id_is_not_a_store_outage_on_postgresql(
        home: Path, flows: Path, pg_url: str) -> None:
    """Severity: low (wrong status; an operator's alerting sees the store down).

    On SQLite `GET /api/v1/runs/%00` is 404 "no run". On PostgreSQL the id reaches the
    query and psycopg refuses a NUL byte: the server answers 503 "the state store cannot
    be read" (exit code 3), for any client-chosen id, workflow filter, event stream and
    page. A monitor probing the API (or a typo'd link) reports the database down.

    Observed: 503 {"error": "...: PostgreSQL text fields cannot contain NUL (0x00) bytes",
    "exit_code": 3}.
    Expected: 404 (no such run) or 400, as for any other id no run has."""
    with serve(home, "--workflows", str(flows), "--state", pg_url) as srv:
        for path in ("/api/v1/runs/%00", "/api/v1/runs/ab%00cd/events",
                     "/api/v1/runs?workflow=%00"):
            r = srv.client.get(path)
            assert r.status_code in (200, 400, 404), (path, r.status_code, r.text)


def test_the_login_cookie_sent_to_other_ports_is_not_the_token(srv: Server) -> None:
    """Severity: medium (a hostile local account gets a permanent token).

    Cookies are per host, not per port (RFC 6265 section 8.5), and SameSite counts every
    port of 127.0.0.1 as the same site: after the `?token=` login the browser sends
    `flowsh_token` to *any* server on 127.0.0.1, and any local account may listen on a
    loopback port. The cookie's value is the token itself: the one in
    $FLOWSH_HOME/ui-token, reused at every restart and valid as `Authorization: Bearer`.
    So one visit to another account's page on 127.0.0.1:ANY hands it a key that works
    until the user deletes the file by hand (docs/ui.md: "Loopback is not private").

    Observed: the listener on another loopback port receives `flowsh_token=<the token
    of ui-token>`, and that value is accepted as a Bearer token.
    Expected: the cookie carries a value of this server's start only (a session, as the
    CSRF token is), never the long-lived token."""
    import threading

    import httpx

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    got: list[bytes] = []

    def other_accounts_server() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            got.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi")

    thread = threading.Thread(target=other_accounts_server, daemon=True)
    thread.start()
    try:
        with httpx.Client(timeout=30) as browser:
            login = browser.get(srv.printed)  # the URL `flowsh serve` printed
            assert login.status_code == 303, login.text
            assert browser.get(srv.url + "/api/v1/session").status_code == 200
            browser.get(f"http://127.0.0.1:{listener.getsockname()[1]}/")
        thread.join(10)
    finally:
        listener.close()
    head = got[0].decode("latin-1")
    cookie = [ln for ln in head.split("\r\n") if ln.lower().startswith("cookie:")]
    assert cookie, head  # the browser sent flowsh's cookie to the other port
    # fix17b: the cookie is named per port now (flowsh_session_PORT): take flowsh's one.
    pairs = [p.strip() for p in cookie[0].split(":", 1)[1].split(";")]
    stolen = next(p for p in pairs if p.startswith("flowsh_")).split("=", 1)[1]
    reused = httpx.get(srv.url + "/api/v1/session",
                       headers={"Authorization": f"Bearer {stolen}"})
    assert stolen != srv.token and reused.status_code == 401, (
        f"another port got the long-lived token {stolen!r} (Bearer: {reused.status_code})")


def test_serve_does_not_make_a_world_writable_flowsh_home(tmp_path: Path) -> None:
    """Severity: medium (under a umask of 000, as some container entrypoints and service
    units set: the token file's directory is writable by every account).

    `flowsh serve` with a FLOWSH_HOME that does not exist yet creates it via the plugin
    cache (flowsh/cache.py `mkdir(mode=0o700, parents=True)`: the mode is for the leaf,
    the parents get 0777 & ~umask) before token.default_token's ensure_private_dir, which
    leaves an existing home as it is. With umask 000 the home is 0777, not sticky: any
    local account can delete `ui-token` and plant a FIFO (the server then hangs at its
    next start), swap `flowsh.db` for its own, or rename `runs/` and put its own in place.
    The serve command accepts such a home silently, even on later starts.

    Observed: FLOWSH_HOME created drwxrwxrwx.
    Expected: created 0700 as ensure_private_dir documents (or serve refuses a home that
    other accounts can write)."""
    import stat

    home = tmp_path / "fresh" / "home"
    out = tmp_path / "serve.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flowsh", "serve", "--port", "0"],
                                # As a user runs it: with the installed plugins' entry points
                                # (the test suite turns them off; they make the cache).
                                env={**{k: v for k, v in os.environ.items()
                                        if k != "FLOWSH_LOAD_ENTRYPOINTS"},
                                     "FLOWSH_HOME": str(home)},
                                stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: os.umask(0))
    try:
        wait_for(lambda: "?token=" in out.read_text() or proc.poll() is not None, 30,
                 "the URL flowsh serve prints")
        assert (home / "ui-token").exists(), out.read_text()
        mode = stat.S_IMODE(os.stat(home).st_mode)
        assert not mode & 0o022, f"FLOWSH_HOME {home} is {oct(mode)}"
    finally:
        proc.terminate()
        proc.wait(10)


FAILING = """\
name: fails
steps:
  - name: a
    run: echo hello
  - name: b
    needs: [a]
    run: exit 3
"""


def test_a_nul_in_a_retried_step_name_is_a_one_line_refusal(
        home: Path, tmp_path: Path) -> None:
    """Severity: low (500 and a traceback in the server's log).

    `POST /api/v1/runs/ID/retry {"step": "b\\u0000x"}` (and the page's Retry form with
    `step=b%00x`) passes the name as an argv item: subprocess refuses an embedded NUL
    with ValueError, which actions._spawn does not catch (it catches OSError). The client
    gets a plain-text `Internal Server Error` and the server's log a traceback.

    Observed: 500 text/plain "Internal Server Error".
    Expected: a one-line JSON refusal (400/404/422), as for any other unknown step name."""
    flows = tmp_path / "failflows"
    flows.mkdir()
    (flows / "fails.yaml").write_text(FAILING)
    with serve(home, "--workflows", str(flows)) as srv:
        run_id = srv.post("/api/v1/runs", {"workflow": "fails"}).json()["run_id"]
        wait_for(lambda: srv.client.get(f"/api/v1/runs/{run_id}").json()["status"]
                 == "failed", 60, "the run to fail")
        r = srv.post(f"/api/v1/runs/{run_id}/retry", {"step": "b\x00x"})
        assert r.status_code < 500, (r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("application/json"), r.text[:200]


@pytest.mark.parametrize("host", ["127.1", "LOCALHOST"])
def test_the_host_check_holds_for_every_spelling_of_loopback(
        home: Path, flows: Path, host: str) -> None:
    """Severity: low (defence in depth: the DNS-rebinding guard is off, the token still
    holds).

    docs/ui.md: bound to loopback, the server answers only requests whose Host is a
    loopback name. config.is_loopback knows `localhost` and what ipaddress parses, but
    the socket is bound with getaddrinfo, which also takes `127.1` (inet_aton) and
    `LOCALHOST` (names are case-insensitive): the server listens on 127.0.0.1 and then
    skips the Host check, so a rebinding page's requests (Host: evil.example) reach the
    token check and every handler behind it.

    Observed: `--host 127.1` / `--host LOCALHOST`, `Host: evil.example` -> 200 (401
    without the token: past the Host check either way).
    Expected: 400 "unexpected Host", as with `--host 127.0.0.1`."""
    import httpx

    with serve(home, "--workflows", str(flows), "--host", host) as srv:
        r = httpx.get(srv.url + "/api/v1/session",
                      headers={"Host": "evil.example", "Authorization": f"Bearer {srv.token}"})
        assert r.status_code == 400, (r.status_code, r.text)


def test_a_token_outside_latin_1_is_refused_or_works(tmp_path: Path) -> None:
    """Severity: low (a token of the user's choosing locks everyone out; 500 and a
    traceback).

    A token from FLOWSH_UI_TOKEN or --token-file is taken as is. With a character outside
    Latin-1 (a passphrase with `€`, an emoji) the `?token=` login matches, then
    Starlette's set_cookie encodes the header as Latin-1 and raises: 500 text/plain and a
    UnicodeEncodeError traceback in the server's log. Bearer cannot work either (headers
    are read as Latin-1, compared as UTF-8). The server starts and prints its URL as if
    all were well.

    Observed: `GET /?token=p%C3%A4ss%E2%82%AC...` -> 500 "Internal Server Error".
    Expected: such a token refused at start (exit 2, one line), or a login that works."""
    from urllib.parse import quote

    import httpx

    token = "päss€word-rt17b"
    home = tmp_path / "home"
    out = tmp_path / "serve.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flowsh", "serve", "--port", "0"],
                                env={**os.environ, "FLOWSH_HOME": str(home),
                                     "FLOWSH_UI_TOKEN": token},
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "?token=" in out.read_text() or proc.poll() is not None, 30,
                 "the URL, or an exit")
        if proc.poll() is not None:
            text = out.read_text()
            assert proc.returncode == 2 and len(text.strip().splitlines()) == 1, text
            return
        port = out.read_text().split("http://127.0.0.1:", 1)[1].split("/", 1)[0]
        r = httpx.get(f"http://127.0.0.1:{port}/?token={quote(token)}", timeout=30)
        assert r.status_code == 303, (r.status_code, r.text[:200])
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_deeply_nested_json_body_is_a_400(srv: Server) -> None:
    """Severity: low (500 and a traceback in the server's log, for 200 KB of brackets).

    api._body turns a body that is not JSON into a 400 but catches only ValueError:
    `[[[[...` 200,000 deep (well under MAX_BODY) makes json.loads raise RecursionError,
    which escapes as a plain-text 500 on POST /api/v1/runs and POST .../retry.

    Observed: 500 text/plain "Internal Server Error", RecursionError in the server's log.
    Expected: 400 {"error": "the request body is not JSON", ...} (or 413)."""
    for body in (b"[" * 200_000, b'{"workflow": "sec", "params": ' + b'{"a":' * 100_000):
        r = srv.client.post("/api/v1/runs", content=body,
                            headers={"X-CSRF-Token": srv.csrf,
                                     "Content-Type": "application/json"})
        assert r.status_code in (400, 413), (r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("application/json"), r.text[:200]


SEED_OK = """\
#!/bin/bash
a() { echo step a; }
declare -A workflow=( [start]=a [a]=end )
"""

SEED_PLANTED = """\
#!/bin/bash
PLANTED=$(echo "ran as uid $(id -u)" > {proof}; echo x)
a() { echo step a; }
declare -A workflow=( [start]=a [a]=end )
"""


def test_viewing_the_dashboard_runs_no_code_from_workflow_files(
        home: Path, tmp_path: Path) -> None:
    """Severity: high (code execution as the server's user by whoever can write a
    recorded workflow path; runs even under --read-only, with no action taken).

    The dashboard (and /dashboard/cards, which web.js fetches whenever any run starts or
    ends, the run pages, every log request's masker) calls data.load_workflow_quietly on
    every workflow *in history*, at the path its runs recorded. For a seed-style bash
    file, loader.load_workflow -> seed.parse_seed(check=True) -> bashlib.probe_names
    *sources the file in bash*, and the guard runs top-level assignments with their
    command substitutions. So: the user once ran `flowsh run /srv/shared/job.sh` (or
    /tmp/job.sh, since deleted); another account writes or re-creates that file with
    `X=$(anything)` at the top; the next time anyone looks at the dashboard — read-only,
    no button pressed, or just a run ending while a dashboard tab is open — the server
    runs it as the user. The CLI's own read commands (status, history) do not.

    Observed: GET / on `flowsh serve --read-only` creates the planted proof file.
    Expected: rendering a page never executes a workflow file (no bash probe when
    loading for display; at most files among --workflows are read)."""
    from tests.conftest import run_cli

    shared = tmp_path / "shared"
    shared.mkdir()
    job = shared / "job.sh"
    job.write_text(SEED_OK)
    done = run_cli("run", str(job))
    assert done.returncode == 0, done.stderr
    proof = tmp_path / "PROOF"
    job.write_text(SEED_PLANTED.replace("{proof}", str(proof)))  # another account's edit
    empty = tmp_path / "flows"
    empty.mkdir()
    with serve(home, "--read-only", "--workflows", str(empty)) as srv:
        page = srv.client.get("/")
        assert page.status_code == 200, page.text[:200]
        assert not proof.exists(), proof.read_text()

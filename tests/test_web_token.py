"""`flowsh serve` is behind a token by default (loopback is every local account's): it makes
one in $FLOWSH_HOME/ui-token (0600), prints the URL that logs a browser in, and answers
401 to anyone without it, on the API and on the pages."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_cli
from tests.web_helpers import serve

PAGES_AND_API = ["/", "/runs", "/runs/x", "/static/web.js", "/api/v1/runs",
                 "/api/v1/workflows", "/api/v1/session", "/api/v1/runs/x/events", "/metrics"]


@pytest.fixture
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWSH_UI_TOKEN", raising=False)


def test_a_token_by_default(home: Path, no_token_env: None) -> None:
    with serve(home) as srv:
        path = home / "ui-token"
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
        token = path.read_text().strip()
        assert len(token) >= 40 and srv.token == token
        assert srv.printed.endswith(f"/?token={token}")

        anon = httpx.Client(base_url=srv.url)
        cookie_name = f"flowsh_session_{srv.url.rsplit(':', 1)[1]}"
        for where in PAGES_AND_API:
            assert anon.get(where).status_code == 401, where
            r = anon.get(where, headers={"Authorization": "Bearer " + token[:-1] + "x"})
            assert r.status_code == 401, where
            # The token itself is no cookie: only the session value a login sets.
            for cookie in (f"flowsh_token={token}", f"{cookie_name}={token}",
                           f"{cookie_name}=nope"):
                assert anon.get(where, headers={"Cookie": cookie}).status_code == 401, where
        assert anon.get("/?token=wrong").status_code == 401
        assert anon.post("/api/v1/runs", json={}, headers={"X-CSRF-Token": srv.csrf}
                         ).status_code == 401
        # With it: the printed link logs a browser in (a cookie), then the pages answer.
        r = anon.get(srv.printed.replace(srv.printed.split("/?")[0], srv.url))
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert anon.get("/").status_code == 200
        assert srv.client.get("/api/v1/runs").status_code == 200

    # The next start reuses it: bookmarks and scripts keep working.
    with serve(home) as srv:
        assert srv.token == token


def test_a_token_file_not_private_is_refused(home: Path, no_token_env: None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "ui-token"
    path.write_text("readable-by-all\n")
    path.chmod(0o644)
    r = run_cli("serve", "--port", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "mode 0600" in r.stderr and "it is 644" in r.stderr and "Traceback" not in r.stderr
    # A link planted there (to a file another account reads) is refused too, not followed.
    path.unlink()
    target = home / "elsewhere"
    target.write_text("planted\n")
    target.chmod(0o600)
    path.symlink_to(target)
    r = run_cli("serve", "--port", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(path) in r.stderr, r.stderr
    path.unlink()
    path.write_text("")
    path.chmod(0o600)
    r = run_cli("serve", "--port", "0")
    assert r.returncode == 2 and "empty" in r.stderr, r.stderr


def test_a_given_token_is_used_and_never_printed(home: Path, tmp_path: Path) -> None:
    with serve(home, env={"FLOWSH_UI_TOKEN": "from-the-env-1234"},
               token="from-the-env-1234") as srv:
        assert srv.printed.endswith("/?token=YOUR_TOKEN")
        assert not (home / "ui-token").exists()
        assert httpx.get(srv.url + "/api/v1/runs").status_code == 401
        assert srv.client.get("/api/v1/runs").status_code == 200


@pytest.mark.parametrize("token", ["short", "pass phrase ünïcode-long"])
def test_a_weak_or_non_ascii_token_is_refused_at_start(home: Path, token: str) -> None:
    r = run_cli("serve", "--port", "0", env={"FLOWSH_UI_TOKEN": token})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "FLOWSH_UI_TOKEN" in r.stderr and "Traceback" not in r.stderr, r.stderr

"""flowsh.scriptsplit: a plain script's functions and what its `main` calls."""

from __future__ import annotations

from flowsh.scriptsplit import calls, entry, functions, stages

SCRIPT = """\
#!/bin/bash
set -euo pipefail
log() { echo "$(date) $*"; }
function dump_db {
  log "dumping"
  cat <<EOF
upload_files should not count here
EOF
}
compress() {
  log compress
}
upload_files() { log up; }
rotate() { log "rotate $1"; }
main() {
  cd /srv
  log "start"
  dump_db
  compress | upload_files
  rotate 7
  if true; then
    dump_db
  fi
}
main "$@"
"""


def test_functions_in_file_order() -> None:
    assert functions(SCRIPT) == ["log", "dump_db", "compress", "upload_files", "rotate", "main"]


def test_entry() -> None:
    assert entry(SCRIPT, functions(SCRIPT)) == "main"
    alt = "a() { :; }\nrun_all() { a; }\nrun_all \"$@\"\n"
    assert entry(alt, functions(alt)) == "run_all"
    assert entry("a() { :; }\n", ["a"]) is None
    assert entry("main() { :; }\n", ["main"]) == "main"


def test_calls_in_command_position_only() -> None:
    names = {"dump_db", "compress", "upload_files"}
    body = "echo dump_db\nif compress; then x && upload_files; fi\n! dump_db"
    assert calls(body, names) == ["compress", "upload_files", "dump_db"]
    assert calls("cat <<EOF\ncompress\nEOF\n", names) == []


def test_stages_from_main() -> None:
    steps, from_main, left = stages(SCRIPT)
    assert from_main
    assert [f for f, _ in steps] == ["dump_db", "compress", "rotate", "dump_db"]
    assert steps[1] == ("compress", "compress | upload_files")
    assert steps[2] == ("rotate", "rotate 7")
    assert steps[3][1].startswith("if true; then") and steps[3][1].rstrip().endswith("fi")
    assert "cd /srv" in left and 'log "start"' in left


def test_stages_without_main_skip_helpers() -> None:
    text = "log() { echo; }\nfetch() { log a; }\nload() { log b; }\n"
    assert stages(text) == ([("fetch", "fetch"), ("load", "load")], False, [])


def test_no_functions() -> None:
    assert functions("echo hi\n") == []
    assert stages("echo hi\n") == ([], False, [])

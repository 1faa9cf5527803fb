"""The exported script's slot (templates/bash/runtime.sh.j2, flowsh_latest_slot) against
`flowsh run`'s (flowsh/slot.py, croniter) around every DST change of 2026 in zones whose
clocks move by an hour, by 30 minutes (Lord Howe), at 02:45 (Chatham) or at midnight
(Santiago): one real bash, many times, each compared (SLOT-1)."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from flowsh.slot import bash_schedules, format_time, latest_slot
from tests.conftest import run_cli

ZONES = ["America/New_York", "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago"]
EXPRS = ["0 2 * * *", "30 1 * * *", "45 1 * * *", "15 2 * * *", "30 * * * *", "0 0 * * *",
         "*/20 * * * *", "0 1,2,3 * * *", "10 0 * * 0"]
MINUTES = [-61, -31, -1, 0, 1, 29, 30, 31, 45, 59, 60, 61, 89, 121]


def _changes(zone: ZoneInfo) -> list[datetime]:
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    before = t.astimezone(zone).utcoffset()
    found = []
    while t.year == 2026:
        t += timedelta(minutes=15)
        now = t.astimezone(zone).utcoffset()
        if now != before:
            found.append(t)
            before = now
    return found


def test_script_slot_is_run_s_around_dst_changes(tmp_path: Path) -> None:
    flow = tmp_path / "f.yaml"
    flow.write_text('name: f\nschedule: "0 2 * * *"\nsteps:\n  - {name: a, run: "true"}\n')
    out = tmp_path / "f.sh"
    assert run_cli("export", "--bash", str(flow), "-o", str(out)).returncode == 0
    driver = out.read_text().rsplit('flowsh_main "$@"', 1)[0] + (
        "while IFS=$'\\t' read -r s now; do FLOWSH_SCHEDULES=(\"$s\"); "
        'flowsh_latest_slot "$now"; printf "%s\\n" "$REPLY"; done\n')
    cases = [(f"CRON_TZ={zone} {expr}", change + timedelta(minutes=m, seconds=7))
             for zone in ZONES for change in _changes(ZoneInfo(zone))
             for expr in EXPRS for m in MINUTES]
    given = "".join(f"{bash_schedules([c])[0]}\t{int(n.timestamp())}\n" for c, n in cases)
    # From a file: the script outgrew what one argument may hold (128 KiB).
    (tmp_path / "driver.sh").write_text(driver)
    got = subprocess.run(["bash", str(tmp_path / "driver.sh")], input=given,
                         capture_output=True, text=True, timeout=600,
                         check=True).stdout.split("\n")
    wrong = [(c, format_time(n), format_time(latest_slot([c], n)), g)
             for (c, n), g in zip(cases, got, strict=False)
             if format_time(latest_slot([c], n)) != g]
    assert len(got) == len(cases) + 1
    assert wrong == [], f"{len(wrong)} of {len(cases)} differ (schedule, now, run, script): " \
                        f"{wrong[:5]}"

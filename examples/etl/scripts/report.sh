#!/usr/bin/env bash
# Revenue by country, from the warehouse.
set -euo pipefail
python3 - "$DB" <<'PY'
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(
    "SELECT country, count(*), round(sum(amount_usd), 2) FROM orders "
    "GROUP BY country ORDER BY 3 DESC").fetchall()
print(f"{'country':<8}{'orders':>7}{'usd':>10}")
for country, n, usd in rows:
    print(f"{country:<8}{n:>7}{usd:>10.2f}")
PY

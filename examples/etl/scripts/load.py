"""Load the cleaned orders (TSV) into SQLite in one transaction; re-running is harmless."""

import sqlite3
import sys

src, db = sys.argv[1], sys.argv[2]
rows = [line.rstrip("\n").split("\t") for line in open(src, encoding="utf-8") if line.strip()]
conn = sqlite3.connect(db)
with conn:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS orders ("
        " order_id INTEGER PRIMARY KEY, customer TEXT, country TEXT, amount_usd REAL)"
    )
    conn.executemany("INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?)", rows)
print(f"loaded {len(rows)} rows into {db}")

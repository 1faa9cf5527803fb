"""Print how many of the batch's orders (ids in the cleaned TSV) the warehouse holds."""

import sqlite3
import sys

db, batch = sys.argv[1], sys.argv[2]
ids = [int(line.split("\t", 1)[0]) for line in open(batch, encoding="utf-8") if line.strip()]
conn = sqlite3.connect(db)
marks = ",".join("?" * len(ids)) or "NULL"
print(conn.execute(f"SELECT count(*) FROM orders WHERE order_id IN ({marks})", ids).fetchone()[0])

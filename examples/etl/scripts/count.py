"""Print how many orders the warehouse holds."""

import sqlite3
import sys

print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM orders").fetchone()[0])

#!/bin/bash
# The seed's ETL pipeline ("Missão 1: Pipeline ETL"), as plain bash: step functions plus an
# associative array chaining them. It runs on its own (`bash etl.sh`) and, unchanged, under
# flowsh (`flowsh run etl.sh`), which adds checkpoints, resume, retries, logs and alerts.
# etl.yaml beside it is the same workflow as YAML, made by `flowsh import etl.sh`.
#
# Settings (environment): ETL_INPUT (CSV: day,region,amount), ETL_DIR (work files),
# ETL_DB (sqlite database), ETL_PAUSE (seconds load_data waits first: a slow load to
# interrupt in the demo).

ETL_INPUT="${ETL_INPUT:-input/sales.csv}"
ETL_DIR="${ETL_DIR:-work}"
ETL_DB="${ETL_DB:-$ETL_DIR/sales.db}"

declare -A workflow

extract_data() {
    mkdir -p "$ETL_DIR"
    cp "$ETL_INPUT" "$ETL_DIR/raw.csv" || return 1
    echo "extracted $(($(wc -l < "$ETL_DIR/raw.csv") - 1)) rows from $ETL_INPUT"
}

transform_data() {
    # Drop the header and rows without an amount; region upper-case; amount in cents.
    awk -F, 'NR > 1 && $3 != "" { printf "%s,%s,%d\n", $1, toupper($2), $3 * 100 + 0.5 }' \
        "$ETL_DIR/raw.csv" > "$ETL_DIR/clean.csv" || return 1
    echo "transformed $(wc -l < "$ETL_DIR/clean.csv") rows"
}

load_data() {
    sleep "${ETL_PAUSE:-0}"
    # Idempotent: a re-run after an interruption replaces rows instead of adding them.
    sqlite3 "$ETL_DB" <<SQL || return 1
CREATE TABLE IF NOT EXISTS sales (day TEXT, region TEXT, cents INTEGER,
                                  PRIMARY KEY (day, region));
DROP TABLE IF EXISTS stage;
CREATE TABLE stage (day TEXT, region TEXT, cents INTEGER);
.import --csv $ETL_DIR/clean.csv stage
INSERT OR REPLACE INTO sales SELECT day, region, cents FROM stage;
DROP TABLE stage;
SQL
    echo "loaded into $ETL_DB"
}

validate_data() {
    local want got
    want=$(wc -l < "$ETL_DIR/clean.csv")
    got=$(sqlite3 "$ETL_DB" "SELECT count(*) FROM sales")
    if [ "$want" -eq 0 ] || [ "$got" -lt "$want" ]; then
        echo "validation failed: $got rows in $ETL_DB, expected $want" >&2
        return 1
    fi
    echo "validated: $got rows, total $(sqlite3 "$ETL_DB" \
        "SELECT printf('%.2f', sum(cents) / 100.0) FROM sales")"
}

# The seed's executor (starting from ["start"]'s step).
execute_workflow() {
    local current=${workflow[start]}
    local data=$1

    while [ "$current" != "end" ]; do
        echo "Executando: $current"
        $current "$data" || return 1
        current=${workflow[$current]}
    done
}

etl_workflow() {
    local workflow_id="etl_$(date +%s)"

    # Define steps
    workflow=(
        ["start"]="extract_data"
        ["extract_data"]="transform_data"
        ["transform_data"]="load_data"
        ["load_data"]="validate_data"
        ["validate_data"]="end"
    )

    # Executa workflow
    execute_workflow "$workflow_id"
}

etl_workflow "$@"

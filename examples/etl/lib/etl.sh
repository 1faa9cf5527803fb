#!/usr/bin/env bash
# The ETL library: the seed's four functions, as a team would already have them.
# flowsh sources this file before each step, so `run: extract_data` calls them directly.
# Every value comes from the environment (params, env, earlier steps' outputs).

# Publish a value to later steps (flowsh keeps it in the run's state, so a resumed
# run still has it).
emit() { printf '%s=%s\n' "$1" "$2" >> "$FLOWSH_OUTPUT"; }

extract_data() {
    mkdir -p "$WORK/raw"
    local out="$WORK/raw/orders.csv" f n=0
    : > "$out"
    for f in "$DATA_DIR"/incoming/orders_*.csv; do
        # Only files up to the business day being processed.
        [[ "$(basename "$f" .csv)" > "orders_$day" ]] && continue
        tail -n +2 "$f" >> "$out"
        n=$((n + 1))
    done
    local rows
    rows=$(wc -l < "$out")
    echo "extracted $rows rows from $n files up to $day"
    emit EXTRACTED "$rows"
}

transform_data() {
    mkdir -p "$WORK/clean"
    # Convert every amount to USD, normalise the country, drop duplicate order ids.
    awk -F, -v OFS='\t' '
        NR == FNR { if (FNR > 1) rate[$1] = $2; next }
        !($5 in rate) { print "unknown currency " $5 " in order " $1 > "/dev/stderr"; bad = 1; next }
        { printf "%s\t%s\t%s\t%.2f\n", $1, $2, toupper($3), $4 * rate[$5] }
        END { exit bad }
    ' "$DATA_DIR/rates.csv" "$WORK/raw/orders.csv" | sort -t $'\t' -k1,1 -u > "$WORK/clean/orders.tsv"
    local rows
    rows=$(wc -l < "$WORK/clean/orders.tsv")
    echo "transformed $rows rows"
    emit TRANSFORMED "$rows"
}

load_data() {
    if [ "${simulate_failure:-}" = load ]; then
        echo "load: simulated failure (database is locked)" >&2
        return 1
    fi
    python3 scripts/load.py "$WORK/clean/orders.tsv" "$DB"
}

validate_data() {
    local in_db
    in_db=$(python3 scripts/count.py "$DB" "$WORK/clean/orders.tsv")
    echo "extracted=$EXTRACTED transformed=$TRANSFORMED loaded=$in_db"
    if [ "$in_db" -ne "$TRANSFORMED" ]; then
        echo "validation failed: $in_db rows in the warehouse, $TRANSFORMED expected" >&2
        return 1
    fi
    emit LOADED "$in_db"
}

#!/bin/sh
# Peak memory of `cardform cards open --dry-run` on large CSV files (issue
# 28: memory must not grow with the file). Prints seconds and max RSS for:
#   1. 50,000,000 malformed rows (100 MB),
#   2. ~1.2 GB of valid rows (8.5 M distinct cards),
#   3. ~1.2 GB of invalid rows (half a bad level, half repeats of one card).
# Usage: tests/bench/csv-memory.sh [path/to/cardform]   (needs GNU time, ~4 GB of disk)
set -eu
BIN=$(realpath "${1:-target/release/cardform}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
mkdir ex && cp -r "$ROOT/examples/members" ex/
"$BIN" apply -p ex/members --auto-approve >/dev/null 2>&1
H="external_card_no,user_id,auth_token,refresh_token,open_date,valid_date,level,point,balance,name,cell,birth,front_label_1,front_value_1"
run() {
  /usr/bin/time -f "$1: %e s, %M KB max RSS" "$BIN" cards open --template merchant.brew/template.club \
    -p ex/members --csv "$2" --dry-run --results res.csv >/dev/null 2>err.txt || true
  tail -1 err.txt
  rm -f "$2" res.csv
}
(echo "$H"; yes x | head -n 50000000) > a.csv
run "50 M malformed rows, $(du -h a.csv | cut -f1)" a.csv
(echo "$H"; awk 'BEGIN{for(i=0;i<8500000;i++) printf "P-%09d,2088%012d,tok%d,,2024-01-01 10:00:00,2099-12-31 23:59:59,silver,10,1.50,Member,139%08d,1971-01-01,Tier,Silver\n", i, i, i, i%100000000}') > b.csv
run "8.5 M valid rows, $(du -h b.csv | cut -f1)" b.csv
(echo "$H"; awk 'BEGIN{for(i=0;i<8500000;i++) { if (i%2) printf "P-000000001,2088%012d,tok%d,,2024-01-01 10:00:00,2099-12-31 23:59:59,silver,10,1.50,Member,139%08d,1971-01-01,Tier,Silver\n", i, i, i%100000000; else printf "P-%09d,2088%012d,tok%d,,2024-01-01 10:00:00,2099-12-31 23:59:59,platinum,10,1.50,Member,139%08d,1971-01-01,Tier,Silver\n", i, i, i, i%100000000}}') > c.csv
run "8.5 M invalid rows, $(du -h c.csv | cut -f1)" c.csv

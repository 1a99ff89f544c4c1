#!/usr/bin/env bash
# Samples what Postgres is busy with, by statement, while a benchmark runs beside it:
# every 20 ms, the active client statements (their first 90 characters, whitespace folded),
# counted over the whole sampling. A statement's share of the samples is its share of the
# time Postgres spent executing statements (docs/performance.md).
#
#   scripts/perf/pg-activity-sample.sh 60 > samples.txt    # 60 s, started beside the benchmark
#
# Reads DATABASE_URL (default: the local server's postgres database); prints the counts, most
# frequent first, and the number of samples taken.
set -euo pipefail
seconds="${1:-60}"
url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# Each sample starts with a line "~", so that empty samples are counted too.
query="select '~' union all
       select left(regexp_replace(query, '\s+', ' ', 'g'), 90)
       from pg_stat_activity
       where state = 'active' and backend_type = 'client backend'
         and pid <> pg_backend_pid() \watch 0.02"
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
echo "$query" | timeout "$seconds" psql -XAtq "$url" > "$samples" 2>/dev/null || true
taken=$(grep -cx '~' "$samples" || true)
{ grep -vx '~' "$samples" || true; } | sort | uniq -c | sort -rn
echo "samples: $taken"

#!/bin/bash
# Drives quarry-pool with tsung (apt install tsung), a load generator that is not ours.
#   run.sh hold   tcp|ssl CONNECTIONS BLOCKS   idle miners: RSS per connection, fan-out
#   run.sh shares tcp|ssl WORKERS SHARES       share throughput and latency
# Starts its own pool from $QUARRY_POOL (default target/release/quarry-pool); blocks
# are triggered by $QUARRY_LOAD (default target/release/quarry-load). See BENCHMARKS.md.
set -euo pipefail
mode=$1 type=$2 count=$3 amount=$4
here=$(cd "$(dirname "$0")" && pwd)
pool_bin=${QUARRY_POOL:-target/release/quarry-pool}
load_bin=${QUARRY_LOAD:-target/release/quarry-load}
work=$(mktemp -d)
ulimit -n 20000

case $mode in
hold) difficulty=(--chain-difficulty 1e-6) ;;
shares) difficulty=(--chain-difficulty 1000 --start-difficulty 1e-12 --min-difficulty 1e-12 --max-difficulty 1e-12) ;;
*) echo "mode: hold or shares" >&2; exit 2 ;;
esac
"$pool_bin" run --stratum-tcp 127.0.0.1:0 --stratum-tls 127.0.0.1:0 --api 127.0.0.1:0 \
    --data-dir "$work/data" --allow-cidr 127.0.0.0/8 --max-connections 19900 \
    --idle-timeout 86400 --job-interval 3600 "${difficulty[@]}" > "$work/pool.log" 2>&1 &
pool=$!
trap 'kill $pool 2>/dev/null || true' EXIT
until grep -qs "API on" "$work/pool.log"; do sleep 0.2; done
address() { grep -oE "$1://127.0.0.1:[0-9]+" "$work/pool.log" | head -1 | sed 's/.*://'; }
tcp=$(address tcp)
port=$tcp; [ "$type" = ssl ] && port=$(address ssl)
api=$(grep -oE "API on http://[0-9.:]+" "$work/pool.log" | sed 's/API on //')
field() { curl -s "$api/api/pool" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
rss() { awk '/VmRSS/{print $2}' "/proc/$pool/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$pool/stat"; }

sed -e "s/@PORT@/$port/; s/@TYPE@/$type/; s/@USERS@/$count/; s/@BLOCKS@/$amount/; s/@SHARES@/$amount/; s/@LAST@/$((10000000 + amount - 1))/" \
    "$here/$mode.xml" > "$work/$mode.xml"
rss0=$(rss) cpu0=$(cpu) accepted0=$(field accepted) start=$(date +%s.%N)
tsung -f "$work/$mode.xml" -l "$work/log" start > "$work/tsung.out" 2>&1 &
tsung=$!

if [ "$mode" = hold ]; then
    until [ "$(field sessions)" -ge "$count" ]; do sleep 1; done
    up=$(date +%s.%N)
    sleep 5 # every connection has its first job
    rss1=$(rss)
    for _ in $(seq "$amount"); do
        "$load_bin" hold -o "stratum+tcp://127.0.0.1:$tcp" -n 1 --blocks 1 --sources none > /dev/null 2>&1
        sleep 10 # the fan-out to every tsung connection is over
    done
    wait $tsung
    log=$(ls -d "$work"/log/*/)
    echo "{\"connections\": $count, \"up_seconds\": $(python3 -c "print(round($up - $start, 1))"),"\
        "\"rss_kib_per_connection\": $(python3 -c "print(round(($rss1 - $rss0) / $count, 2))")}"
    grep -E "^stats: (connect|tr_subscribe|tr_authorize) " "$log/tsung.log" | tail -3
    python3 "$here/report.py" fanout "$log/tsung.dump"
else
    wait $tsung
    end=$(date +%s.%N) cpu1=$(cpu) accepted1=$(field accepted)
    log=$(ls -d "$work"/log/*/)
    python3 - "$start" "$end" "$cpu0" "$cpu1" "$accepted0" "$accepted1" <<'PY'
import json, sys
start, end, cpu0, cpu1, a0, a1 = map(float, sys.argv[1:])
accepted = a1 - a0
print(json.dumps({"accepted": int(accepted), "seconds": round(end - start, 1), "accepted_per_second": round(accepted / (end - start)),
                  "pool_cpu_us_per_share": round((cpu1 - cpu0) * 1e4 / accepted, 2)}))
PY
    grep -E "^stats: (match|nomatch|error_[a-z_]*) " "$log/tsung.log" | tail -4
    python3 "$here/report.py" shares "$log/tsung-fullstats.log"
fi
echo "tsung logs: $log"

#!/usr/bin/env bash
# End-to-end WhatsApp run against `herald mock-provider`, exactly as issue 4's acceptance:
# a 6,000-recipient campaign via the API, the sender paced at RATE/s, the mock enforcing MPS/s.
# Prints the calls-log figures (max calls in any 1 s window, mean rate, duplicate message ids,
# share of 130429 after the first 10 s) and the final progress.
#
#   cargo build --release && deploy/smoke-whatsapp.sh            # RATE=80 MPS=80 N=6000
#   RATE=80 MPS=50 N=3000 deploy/smoke-whatsapp.sh               # the AIMD case
set -euo pipefail
RATE=${RATE:-80}; MPS=${MPS:-80}; N=${N:-6000}
BIN=${BIN:-./target/release/herald}
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
API=127.0.0.1:18080; MOCK=127.0.0.1:19090

# The mock provider is on loopback: allow private provider addresses for this run only.
HERALD_DATA_DIR=$WORK/data HERALD_LISTEN=$API HERALD_METRICS_LISTEN=127.0.0.1:0 HERALD_ALLOW_PRIVATE_PROVIDER_ADDRESSES=1 \
  "$BIN" serve >"$WORK/serve.log" 2>&1 &
"$BIN" mock-provider --listen $MOCK --webhook-url http://$API/webhooks/whatsapp --app-secret smoke-secret \
  --mps "$MPS" --failure-rate 0.02 --calls-log "$WORK/calls.jsonl" >"$WORK/mock.log" 2>&1 &
until curl -sf http://$API/healthz >/dev/null && curl -sf http://$MOCK/healthz >/dev/null; do sleep 0.2; done

ADMIN=$(HERALD_DATA_DIR=$WORK/data "$BIN" token --role platform_admin)
curl -sf -X POST http://$API/v1/tenants -H "Authorization: Bearer $ADMIN" -d '{"name": "smoke"}' >/dev/null
TA=$(HERALD_DATA_DIR=$WORK/data "$BIN" token --role tenant_admin --tenant 1)
OP=$(HERALD_DATA_DIR=$WORK/data "$BIN" token --role operator --tenant 1)
curl -sf -X PUT http://$API/v1/tenants/1/providers/whatsapp -H "Authorization: Bearer $TA" -d "{
  \"base_url\": \"http://$MOCK\", \"api_version\": \"v21.0\", \"access_token\": \"smoke-token\",
  \"app_secret\": \"smoke-secret\", \"verify_token\": \"smoke-verify\",
  \"senders\": [{\"phone_number_id\": \"PN-SMOKE\", \"rate_limit_per_s\": $RATE}]}" >/dev/null
curl -sf -X POST http://$API/v1/templates -H "Authorization: Bearer $OP" -d '{"name": "order",
  "channel": "whatsapp", "whatsapp": {"template_name": "order_update_v1", "language": "en_US",
  "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{ name }}"}]}]}}' >/dev/null
curl -sf -X POST http://$API/v1/audiences -H "Authorization: Bearer $OP" -d '{"name": "smoke"}' >/dev/null
{ echo "address,name"; for i in $(seq 0 $((N - 1))); do printf '+1202%07d,Member %d\n' $((5550000 + i)) "$i"; done; } >"$WORK/people.csv"
curl -sf -X POST http://$API/v1/audiences/1/import -H "Authorization: Bearer $OP" \
  -H 'Content-Type: text/csv' --data-binary @"$WORK/people.csv" >/dev/null
curl -sf -X POST http://$API/v1/campaigns -H "Authorization: Bearer $OP" \
  -d '{"name": "smoke", "template_id": 1, "audience_id": 1}' >/dev/null
curl -sf -X POST http://$API/v1/campaigns/1/send -H "Authorization: Bearer $OP" >/dev/null
while ! curl -sf http://$API/v1/campaigns/1/progress -H "Authorization: Bearer $OP" | grep -q '"status":"completed"'; do sleep 1; done
curl -s http://$API/v1/campaigns/1/progress -H "Authorization: Bearer $OP"; echo
python3 - "$WORK/calls.jsonl" <<'PY'
import json, sys
calls = [json.loads(l) for l in open(sys.argv[1])]
ts = sorted(c["ts_ms"] for c in calls)
j = best = 0
for i, t in enumerate(ts):
    while ts[j] + 1000 <= t:
        j += 1
    best = max(best, i - j + 1)
ok = [c for c in calls if "wamid" in c]
ids = [c["message_id"] for c in ok]
span = (max(c["ts_ms"] for c in ok) - min(c["ts_ms"] for c in ok)) / 1000
late = [c for c in calls if c["ts_ms"] >= ts[0] + 10_000]
throttled = sum(1 for c in late if c.get("error_code") == 130429)
print(f"calls {len(calls)}, accepted {len(ok)}, max calls in any 1 s window {best}, "
      f"mean rate {(len(ok) - 1) / span:.2f}/s, duplicate message ids {len(ids) - len(set(ids))}, "
      f"130429 after 10 s {throttled}/{len(late)} ({100 * throttled / max(len(late), 1):.2f}%)")
PY

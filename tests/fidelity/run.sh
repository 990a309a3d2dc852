#!/usr/bin/env bash
# Fidelity against Alipay's own code (alipay-sdk-python from PyPI):
#  1. the official SDK's requests are accepted by `cardform sandbox serve`, and its
#     response verification accepts the sandbox's signatures;
#  2. cardform's client is accepted by a gateway that verifies with the SDK's
#     signature code and refuses field names unknown to the SDK's model classes.
# Needs root (the SDK always connects to port 80) and python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/fidelity
keys=tests/data/keys
bin=${CARDFORM_BIN:-target/debug/cardform}
python3 -m pip install --quiet --disable-pip-version-check alipay-sdk-python==3.7.1411
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# 1. official SDK -> cardform sandbox on port 80
"$bin" sandbox serve --listen 127.0.0.1:80 --data "$work/sandbox" \
  --app "2021000000000001=$keys/app_a_public_spki.txt" >"$work/sandbox.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening" "$work/sandbox.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening" "$work/sandbox.out" || { cat "$work/sandbox.out"; exit 1; }
# The SDK stamps requests with the host's local time; the gateway expects UTC+8.
TZ=CST-8 python3 "$here/sdk_client.py" "$keys/app_a_private_pkcs1.txt" "$work/sandbox/platform_public.pem"

# 2. cardform client -> SDK-built gateway
python3 -u "$here/sdk_gateway.py" "$keys/app_a_public_spki.txt" "$keys/alipay_b_private_pkcs1.txt" >"$work/gw.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening" "$work/gw.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/gw.out")
[ -n "$url" ] || { cat "$work/gw.out"; exit 1; }
export CARDFORM_ENDPOINT="$url" CARDFORM_APP_ID=2021000000000001 \
  CARDFORM_PRIVATE_KEY="$keys/app_a_private_pkcs1.txt" CARDFORM_ALIPAY_PUBLIC_KEY="$keys/alipay_b_public_spki.txt"
passed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
python3 - "$work/img.png" <<'PY'
import struct, sys, zlib
def chunk(k, d): return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
raw = (b"\x00" + bytes(500)) * 500
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 500, 500, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
"$bin" api alipay.offline.material.image.upload --param image_type=png --param image_name=logo --file "image_content=$work/img.png" >/dev/null && ok "cardform image upload accepted by the SDK's verification"
biz='{"request_id":"r1","card_type":"OUT_MEMBER_CARD","biz_no_suffix_len":"12","write_off_type":"qrcode","template_style_info":{"card_show_name":"会员 卡","logo_id":"a","background_id":"b","front_text_list_enable":true},"column_info_list":[{"code":"BALANCE","title":"B","more_info":{"descs":["x"]}}],"field_rule_list":[{"field_name":"Balance","rule_name":"CONST","rule_value":"0"}],"card_action_list":[{"code":"c","text":"t","url_type":"miniAppUrl","mini_app_url":{"mini_app_id":"1","display_on_list":"true"}}],"card_level_conf":[{"level":"gold","level_show_name":"Gold"}],"open_card_conf":{"open_card_source_type":"ISV","card_rights":[{"title":"x"}]},"template_form_config":{"fields":{"required":["OPEN_FORM_FIELD_MOBILE"]}},"pub_channels":[{"pub_channel":"SHOP_DETAIL"}],"shop_ids":["1"]}'
CARDFORM_APP_AUTH_TOKEN=202405BBa1b2c3d4e5f6a7b8c9d0e1f2a3b4X01 "$bin" api alipay.marketing.card.template.create --biz-content "$biz" >/dev/null && ok "cardform template.create (ISV token) accepted"
"$bin" api alipay.marketing.card.formtemplate.set --biz-content '{"template_id":"1","fields":{"required":"{\"common_fields\":[\"OPEN_FORM_FIELD_MOBILE\"]}"}}' >/dev/null && ok "cardform formtemplate.set accepted"
"$bin" api alipay.marketing.card.activateurl.apply --biz-content '{"template_id":"1","callback":"https://e.example/cb"}' >/dev/null && ok "cardform activateurl.apply accepted"
# Running the card (issue 26): each body is what cardform's own request
# builders send, every field they can set (tests/testsuite/api.rs keeps the
# files and the builders in step).
for f in "$here"/requests/*.json; do
  m=$(basename "$f" .json)
  "$bin" api "$m" --biz-content "$(cat "$f")" >/dev/null && ok "cardform $m (every field cardform sends) accepted"
done
if "$bin" api alipay.marketing.card.template.query --biz-content '{"template_id":"1","templateid":"2"}' 2>"$work/err"; then
  echo "FAIL: the SDK gateway accepted an unknown field"; exit 1
fi
grep -q "templateid" "$work/err" && ok "the SDK gateway refuses unknown field names (so the passes above mean something)"
if CARDFORM_PRIVATE_KEY="$keys/alipay_b_private_pkcs1.txt" "$bin" api alipay.marketing.card.template.query --biz-content '{"template_id":"1"}' 2>"$work/err"; then
  echo "FAIL: the SDK gateway accepted a wrong signature"; exit 1
fi
grep -q "isv.invalid-signature" "$work/err" && ok "the SDK gateway refuses a wrong signature"
echo "fidelity: $passed passed, 0 failed"

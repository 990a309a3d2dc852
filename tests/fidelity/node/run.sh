#!/usr/bin/env bash
# Fidelity against Alipay's official Node.js SDK (alipay-sdk, pinned in
# package.json / package-lock.json), in public-key-certificate mode and with
# AES content encryption: the SDK's requests are accepted by
# `cardform sandbox serve --cert-mode`, and the sandbox's answers pass the
# SDK's own verification. Keys and certificates are made with cardform's own
# onboarding commands (keys generate, sandbox issue-cert).
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
bin=${CARDFORM_BIN:-$here/../../../target/debug/cardform}
npm ci --no-audit --no-fund --silent
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
"$bin" keys generate --out keys >/dev/null
"$bin" sandbox issue-cert --data sb --csr keys/app.csr --out keys/app_cert.crt >/dev/null
"$bin" sandbox issue-cert --data sb --csr keys/app.csr --out keys/second.crt >/dev/null
# A fresh AES-128 key, base64, as the console shows it.
head -c 16 /dev/urandom | base64 > aes.key
"$bin" sandbox serve --cert-mode --listen 127.0.0.1:0 --data sb \
  --app 2021000000000077=keys/app_cert.crt --app 2021000000000078=keys/app_cert.crt \
  --encrypt-key 2021000000000078=aes.key >serve.out 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "listening" serve.out 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^sandbox listening on //p' serve.out)
[ -n "$url" ] || { cat serve.out; exit 1; }
# The SDK stamps requests with the host's local time; the gateway expects UTC+8.
TZ=Asia/Shanghai node "$here/sdk_client.mjs" "$url" "$work"

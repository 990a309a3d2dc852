#!/usr/bin/env bash
# The two steps of the GitOps pipeline, shared by the GitHub and GitLab
# examples (and run as they are by cardform's own test suite):
#
#   cardform-ci.sh plan  PROJECT OUT   on every pull/merge request
#   cardform-ci.sh apply PROJECT OUT   on the main branch, after the merge
#
# plan writes to OUT:
#   plan.json     the saved plan, applied as is after the merge
#   comment.md    the Markdown plan for the review comment (at most 60,000
#                 bytes, under GitHub's 65,536 and GitLab's 1,000,000 limits),
#                 headed by a marker so the pipeline updates one comment in place
#   plan.md       the whole Markdown plan (the job artifact)
#   changes       "yes" or "no" (from --detailed-exitcode)
#   previews/     before/after pictures of every template the plan creates,
#                 updates or replaces (cardform plan --preview-dir); plan.md and
#                 comment.md show them with links relative to OUT, so the
#                 uploaded artifact (OUT) displays them beside the plan
# apply applies OUT/plan.json if it has changes. A plan made before another
# merge changed the state or the manifests is refused as stale: re-run the
# pipeline (or push) to plan again. Concurrent applies queue on the state's
# lock (--lock-timeout) besides the CI's own concurrency group.
#
# Everything else comes from the environment, set from the CI's secret store:
# CARDFORM_STATE (postgres://…), CARDFORM_ENDPOINT, CARDFORM_APP_ID,
# CARDFORM_PRIVATE_KEY (a path), CARDFORM_ALIPAY_PUBLIC_KEY or the three
# certificates, merchants' app_auth_tokens as the manifests name them.
# CARDFORM (default: cardform) is the binary.
set -euo pipefail

step=${1:?usage: cardform-ci.sh plan|apply PROJECT OUT}
project=${2:?usage: cardform-ci.sh plan|apply PROJECT OUT}
out=${3:?usage: cardform-ci.sh plan|apply PROJECT OUT}
cardform=${CARDFORM:-cardform}
marker='<!-- cardform-plan -->'

case "$step" in
plan)
  mkdir -p "$out"
  # The whole plan for the artifact (with the card previews), then the
  # saved plan and the comment. The pictures' links are made relative to
  # OUT, where plan.md and comment.md sit in the uploaded artifact.
  rm -rf "$out/previews"
  prefix=$(printf '%s' "$out/" | sed 's/[][\.*^$/]/\\&/g')
  relative() { sed "s/](${prefix}previews\//](previews\//g"; }
  "$cardform" plan "$project" --format markdown --max-bytes 100000000 \
    --preview-dir "$out/previews" | relative >"$out/plan.md"
  set +e
  "$cardform" plan "$project" --format markdown --max-bytes 60000 \
    --out "$out/plan.json" --detailed-exitcode --preview-dir "$out/previews" >"$out/comment.body"
  code=$?
  set -e
  case "$code" in
  0) echo no >"$out/changes" ;;
  2) echo yes >"$out/changes" ;;
  *) exit "$code" ;;
  esac
  { echo "$marker"; relative <"$out/comment.body"; } >"$out/comment.md"
  rm -f "$out/comment.body"
  echo "cardform plan: changes=$(cat "$out/changes")"
  ;;
apply)
  if [ "$(cat "$out/changes" 2>/dev/null)" != yes ]; then
    echo "cardform apply: the reviewed plan has no changes; nothing to apply"
    exit 0
  fi
  "$cardform" apply "$out/plan.json" -p "$project" --lock-timeout "${CARDFORM_LOCK_TIMEOUT:-10m}"
  ;;
*)
  echo "usage: cardform-ci.sh plan|apply PROJECT OUT" >&2
  exit 64
  ;;
esac

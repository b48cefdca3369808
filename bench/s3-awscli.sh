#!/usr/bin/env bash
# Drives the Pocket S3 gateway with the AWS CLI: bucket create/list/delete, put/get/ls/rm, a multipart upload
# (a file above the CLI's 8 MiB multipart threshold), ranges, copies and a recursive sync, with checksum checks.
#
#   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... bench/s3-awscli.sh http://127.0.0.1:9000
#
# Installs the Debian package awscli when `aws` is missing. Not part of CI: run it by hand against a gateway
# (`pocket up` prints its URL, or any GatewayServer). Exits non-zero at the first mismatch.
set -euo pipefail

endpoint="${1:?usage: $0 GATEWAY_URL   (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)}"
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_PAGER=""

if ! command -v aws >/dev/null 2>&1; then
  echo "== installing awscli"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq awscli >/dev/null
fi
aws --version

# Path-style addressing: the gateway answers http://host/bucket/key.
cfg="$(mktemp -d)"
trap 'rm -rf "$cfg"' EXIT
cat > "$cfg/config" <<EOF
[default]
region = ${AWS_DEFAULT_REGION}
s3 =
    addressing_style = path
EOF
export AWS_CONFIG_FILE="$cfg/config"

s3() { aws --endpoint-url "$endpoint" s3 "$@"; }
s3q() { aws --endpoint-url "$endpoint" s3 "$@" --only-show-errors; }
s3api() { aws --endpoint-url "$endpoint" s3api "$@"; }
sum() { sha256sum "$1" | cut -d' ' -f1; }
check() {
  local what="$1"; shift
  if "$@" >/dev/null; then echo "ok: $what"; else echo "FAILED: $what"; exit 1; fi
}
same() {
  if [ "$(sum "$1")" != "$(sum "$2")" ]; then echo "MISMATCH: $1 vs $2"; exit 1; fi
  echo "ok: $3"
}
seconds() { date +%s.%N; }
rate() { awk -v b="$1" -v s="$2" -v e="$3" 'BEGIN { printf "%.1f MiB/s", b / 1048576 / (e - s) }'; }

bucket="awscli-$(date +%s)-$RANDOM"
work="$cfg/work"
mkdir -p "$work/tree/sub"

echo "== bucket $bucket"
s3 mb "s3://$bucket"
check "listed" bash -c "aws --endpoint-url '$endpoint' s3 ls | grep '$bucket'"
check "head-bucket" s3api head-bucket --bucket "$bucket"

echo "== small objects"
echo "hello pocket" > "$work/small.txt"
s3q cp "$work/small.txt" "s3://$bucket/dir/small.txt"
s3q cp "s3://$bucket/dir/small.txt" "$work/small.back"
same "$work/small.txt" "$work/small.back" "small put/get"
check "head-object" s3api head-object --bucket "$bucket" --key dir/small.txt --query ContentLength

echo "== multipart upload (40 MiB, above the 8 MiB threshold)"
head -c $((40 << 20)) /dev/urandom > "$work/big.bin"
start=$(seconds); s3q cp "$work/big.bin" "s3://$bucket/big/big.bin"; end=$(seconds)
echo "   upload $(rate $((40 << 20)) "$start" "$end")"
start=$(seconds); s3q cp "s3://$bucket/big/big.bin" "$work/big.back"; end=$(seconds)
echo "   download $(rate $((40 << 20)) "$start" "$end")"
same "$work/big.bin" "$work/big.back" "multipart put/get"
etag=$(s3api head-object --bucket "$bucket" --key big/big.bin --query ETag --output text)
case "$etag" in *-*) echo "ok: multipart ETag $etag";; *) echo "expected a multipart ETag, got $etag"; exit 1;; esac

echo "== low-level multipart: create, two parts, list, complete"
head -c $((6 << 20)) /dev/urandom > "$work/p1"; head -c 1000 /dev/urandom > "$work/p2"
upload=$(s3api create-multipart-upload --bucket "$bucket" --key manual.bin --query UploadId --output text)
e1=$(s3api upload-part --bucket "$bucket" --key manual.bin --upload-id "$upload" --part-number 1 --body "$work/p1" --query ETag --output text)
e2=$(s3api upload-part --bucket "$bucket" --key manual.bin --upload-id "$upload" --part-number 2 --body "$work/p2" --query ETag --output text)
check "list-parts" test "$(s3api list-parts --bucket "$bucket" --key manual.bin --upload-id "$upload" --query 'length(Parts)' --output text)" = "2"
s3api complete-multipart-upload --bucket "$bucket" --key manual.bin --upload-id "$upload" \
  --multipart-upload "{\"Parts\":[{\"PartNumber\":1,\"ETag\":$e1},{\"PartNumber\":2,\"ETag\":$e2}]}" >/dev/null
cat "$work/p1" "$work/p2" > "$work/manual.expected"
s3q cp "s3://$bucket/manual.bin" "$work/manual.back"
same "$work/manual.expected" "$work/manual.back" "manual multipart"
aborted=$(s3api create-multipart-upload --bucket "$bucket" --key aborted.bin --query UploadId --output text)
check "abort" s3api abort-multipart-upload --bucket "$bucket" --key aborted.bin --upload-id "$aborted"

echo "== range, copy, listing"
s3api get-object --bucket "$bucket" --key big/big.bin --range bytes=1000-1999 "$work/range.back" >/dev/null
dd if="$work/big.bin" of="$work/range.expected" bs=1 skip=1000 count=1000 status=none
same "$work/range.expected" "$work/range.back" "range get"
s3q cp "s3://$bucket/big/big.bin" "s3://$bucket/copies/big.bin"
s3q cp "s3://$bucket/copies/big.bin" "$work/copy.back"
same "$work/big.bin" "$work/copy.back" "server-side copy (multipart copy for large objects)"
for i in $(seq 1 25); do echo "file $i" > "$work/tree/f$i.txt"; done
echo nested > "$work/tree/sub/nested.txt"
s3q sync "$work/tree" "s3://$bucket/tree"
check "sync + recursive ls (26 objects)" test "$(s3 ls --recursive "s3://$bucket/tree/" | wc -l)" = "26"
check "delimiter" test "$(s3api list-objects-v2 --bucket "$bucket" --prefix tree/ --delimiter / --query 'CommonPrefixes[].Prefix' --output text)" = "tree/sub/"
# --page-size makes the CLI follow continuation tokens, 4 keys a page; the query prints each page's keys.
check "paging (4 keys a page)" test "$(s3api list-objects-v2 --bucket "$bucket" --prefix tree/ --page-size 4 --query 'Contents[].Key' --output text | wc -w)" = "26"
s3q sync "$work/tree" "s3://$bucket/tree"
check "sync again uploads nothing" test -z "$(s3 sync "$work/tree" "s3://$bucket/tree" --dryrun)"

echo "== delete"
s3q rm "s3://$bucket/dir/small.txt"
if s3api head-object --bucket "$bucket" --key dir/small.txt 2>/dev/null; then echo "object still there"; exit 1; fi
echo "ok: rm"
if s3 rb "s3://$bucket" 2>/dev/null; then echo "a non-empty bucket was removed"; exit 1; fi
echo "ok: rb refuses a non-empty bucket"
s3q rm --recursive "s3://$bucket"
s3 rb "s3://$bucket"
if s3 ls | grep "$bucket" >/dev/null; then echo "bucket still listed"; exit 1; fi
echo "ok: bucket removed"
echo "all AWS CLI checks passed"

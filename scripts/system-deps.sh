#!/usr/bin/env bash
# System packages the tests use that pip cannot provide: PostgreSQL (store tests on a
# real server) and Chromium (the real-browser UI test). Installed only when missing and
# only where we may (root with apt-get); elsewhere the tests that need them say why
# they skip.
set -uo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: missing system packages (${need[*]}); install them for the full test suite" >&2
    exit 0
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "note: could not install ${need[*]}; the tests that need them will skip" >&2
exit 0

#!/usr/bin/env bash
# CI for the PrestaShop module: php-cli (+ curl, sqlite) from Debian packages when missing,
# `php -l` on every file, then the module's tests: the signer against the Python verifier,
# the module's event table → sender path against a real `jobgate serve`, and the zip layout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

php_ready() {
  command -v php >/dev/null 2>&1 && php -r 'exit(function_exists("curl_init") && extension_loaded("pdo_sqlite") ? 0 : 1);'
}
if ! php_ready; then
  echo "installing php-cli php-curl php-sqlite3"
  export DEBIAN_FRONTEND=noninteractive
  packages=(php-cli php-curl php-sqlite3)
  apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; }
fi
php --version | head -n1

status=0
while IFS= read -r -d '' file; do
  php -l "$file" >/dev/null || { echo "syntax error: $file"; status=1; }
done < <(find "$here" -name '*.php' -print0)

cd "$root"
CI=true .venv/bin/pytest -q \
  tests/webhooks/test_php_module.py \
  tests/webhooks/test_prestashop_module_e2e.py \
  tests/webhooks/test_prestashop_zip.py \
  tests/webhooks/test_prestashop_ping.py || status=1
exit "$status"

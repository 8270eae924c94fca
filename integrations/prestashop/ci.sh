#!/usr/bin/env bash
# CI for the PrestaShop module: php-cli from Debian packages (only when missing), `php -l` on
# every file, then the cross-language test (the module's signer vs the Python verifier).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v php >/dev/null 2>&1; then
  echo "installing php-cli"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y php-cli >/dev/null || { apt-get update >/dev/null && apt-get install -y php-cli >/dev/null; }
fi
php --version | head -n1

status=0
while IFS= read -r -d '' file; do
  php -l "$file" >/dev/null || { echo "syntax error: $file"; status=1; }
done < <(find "$here" -name '*.php' -print0)

cd "$root"
CI=true .venv/bin/pytest -q tests/webhooks/test_php_module.py || status=1
exit "$status"

#!/usr/bin/env bash
# Regenerates the hashed locks from pyproject.toml, keeping every pin that still fits:
#   requirements.lock        what the server imports (the image installs only this)
#   requirements-bench.lock  what `[bench]` adds on top of it (httpx, rich, matplotlib...)
# Both are for CPython 3.12 on Linux, the image's interpreter, and are installed with
# --require-hashes. Upgrade one package: scripts/lock.sh --upgrade-package NAME.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${LOCK_PYTHON:-$(pyenv root)/versions/3.12.1/bin/python3}
ENV=.cache/lock-venv
[ -x "$ENV/bin/pip-compile" ] || {
  "$PYTHON" -m venv "$ENV"
  "$ENV/bin/pip" install -q --disable-pip-version-check "pip-tools==7.6.2"
}
compile() {
  "$ENV/bin/pip-compile" -q --generate-hashes --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --index-url https://pypi.org/simple "$@" pyproject.toml
}

compile "$@" -o requirements.lock
# The bench lock starts as the full resolution (server + bench, pins from both files),
# then loses every pin the runtime lock already has.
all=$(mktemp)
trap 'rm -f "$all"' EXIT
cat requirements.lock requirements-bench.lock > "$all"
compile "$@" --extra bench -o "$all"
python3 - "$all" <<'EOF'
import re
import sys

def blocks(text):
    """Requirement blocks (a pin, its hashes, its `via` comments) by package name."""
    found, current = {}, None
    for line in text.splitlines(keepends=True):
        match = re.match(r"^([A-Za-z0-9_.-]+)==", line)
        if match:
            current = match.group(1).lower()
            found[current] = line
        elif current and line.startswith((" ", "\t")):
            found[current] += line
        else:
            current = None
    return found

runtime = blocks(open("requirements.lock").read())
extra = {k: v for k, v in blocks(open(sys.argv[1]).read()).items() if k not in runtime}
with open("requirements-bench.lock", "w") as out:
    out.write(
        "# What the [bench] extra adds to requirements.lock (scripts/lock.sh writes both).\n"
        "# Install the two together: pip install --require-hashes -r requirements.lock "
        "-r requirements-bench.lock\n"
    )
    out.writelines(extra[k] for k in sorted(extra))
EOF
echo "requirements.lock: $(grep -c '==' requirements.lock) pins; requirements-bench.lock: $(grep -c '==' requirements-bench.lock) more"

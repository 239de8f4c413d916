#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection laid out as ansible-test wants it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.venv/bin"
[ -x "$bin/ansible-test" ] || { echo "run 'make venv' first" >&2; exit 2; }
python_version=$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# ansible-test downloads pip's bootstrap script from a host these machines cannot
# reach; this stand-in installs the same pip from PyPI instead.
pip_version=$("$bin/python" -c 'import re, ansible_test._internal.python_requirements as r, inspect
print(re.search(r"pip=.([0-9.]+)", inspect.getsource(r.get_venv_packages)).group(1))')
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
cat > "$cache/get_pip_${pip_version//./_}.py" <<PY
import subprocess, sys
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
subprocess.check_call([sys.executable, "-m", "pip", "install", "pip==${pip_version}"])
PY

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/homelab/pixels"
mkdir -p "$dest"
cd "$root"
# tracked and new files as they are in the work tree (a deleted one is skipped)
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' file; do
  if [ -e "$file" ] || [ -L "$file" ]; then cp --parents -P "$file" "$dest/"; fi
done
cd "$dest"
git init -q . && git add -A >/dev/null  # ansible-test lists files through git
PATH="$bin:$PATH" "$bin/ansible-test" sanity --python "$python_version" --local --color no "$@"

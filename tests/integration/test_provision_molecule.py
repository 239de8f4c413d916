"""Molecule scenario extensions/molecule/provision: a real sandbox, converge, idempotence, verify."""

import os
import subprocess
import sys

from conftest import incus_cli
from test_molecule import BIN, ROOT


def test_molecule_provision(ansible, incus):
    env = ansible.env({"PIXELS_MOLECULE_PYTHON": sys.executable, "ANSIBLE_STDOUT_CALLBACK": "default",
                       "PY_COLORS": "0", "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1"})
    try:
        proc = subprocess.run([os.path.join(BIN, "molecule"), "test", "-s", "provision"],
                              cwd=os.path.join(ROOT, "extensions"), env=env, capture_output=True, text=True,
                              timeout=1200, check=False)
    finally:
        incus_cli("delete", "--force", "px-pv-molecule", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    # destroy, syntax, create, converge, idempotence, verify, destroy
    assert "successful=7" in output, output[-3000:]
    assert "[provision > idempotence] Executed: Successful" in output, output[-3000:]

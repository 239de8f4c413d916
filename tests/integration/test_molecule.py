"""Molecule scenarios in extensions/molecule (converge, idempotence, verify)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize("scenario", ["incus_host"])
def test_molecule_scenario(scenario, ansible):
    env = ansible.env({"PIXELS_MOLECULE_PYTHON": sys.executable, "ANSIBLE_STDOUT_CALLBACK": "default",
                       "PY_COLORS": "0", "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1"})
    proc = subprocess.run([os.path.join(BIN, "molecule"), "test", "-s", scenario],
                          cwd=os.path.join(ROOT, "extensions"), env=env, capture_output=True, text=True,
                          timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "successful=4" in proc.stdout + proc.stderr  # syntax, converge, idempotence, verify

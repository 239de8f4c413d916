"""Make `ansible_collections.homelab.pixels` importable from the work tree."""


import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collections_root():
    """A directory holding ansible_collections/homelab/pixels -> this repository."""
    venv_root = os.path.join(ROOT, ".venv", "collections")
    link = os.path.join(venv_root, "ansible_collections", "homelab", "pixels")
    if os.path.realpath(link) == ROOT:
        return venv_root
    tmp_root = os.path.join(tempfile.gettempdir(), f"pixels-collections-{os.getuid()}")
    link = os.path.join(tmp_root, "ansible_collections", "homelab", "pixels")
    if os.path.realpath(link) != ROOT:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(ROOT, link)
    return tmp_root


COLLECTIONS_ROOT = collections_root()
if COLLECTIONS_ROOT not in sys.path:
    sys.path.insert(0, COLLECTIONS_ROOT)
os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS_ROOT

pytest_plugins = ["ansible_fixtures"]

"""What the benchmarks share: their arguments, a throw-away Incus project, one line per figure."""

import argparse
import os
import statistics
import subprocess

SOCKET = os.environ.get("PIXELS_TEST_SOCKET", "/var/lib/incus/unix.socket")
IMAGE = os.environ.get("PIXELS_TEST_IMAGE", "debian/12")


def arguments(doc, rounds, extra=()):
    """--rounds and --strict (exit 1 when a target is missed), plus (flag, type, default) extras."""
    parser = argparse.ArgumentParser(description=doc)
    for flag, kind, default in extra:
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args()


def figure(label, values, width=40, digits=2, suffix=""):
    """One figure as a line: median, min and max of the seconds measured."""
    return (f"  {label:<{width}} median {statistics.median(values):6.{digits}f} s   min {min(values):6.{digits}f} s"
            f"   max {max(values):6.{digits}f} s{suffix}")


def create_project(admin, name):
    """A project sharing the default project's images and profile (bridge NIC, root disk)."""
    if not admin.projects.exists(name):
        admin.projects.create(name, config={"features.images": "false", "features.profiles": "false"})


def drop_project(admin, name):
    # A project that cannot go now (still busy) is reused by the next run.
    try:
        admin.projects.get(name).delete()
    except Exception:  # pylint: disable=broad-except
        pass


def delete_instances(project, *names):
    for name in names:
        subprocess.run(["incus", "--project", project, "delete", "--force", name], capture_output=True, check=False)

"""What the benchmarks share: their arguments, a throw-away Incus project, one line per figure."""

import argparse
import os
import statistics
import subprocess

import isolated

SOCKET = os.environ.get("PIXELS_TEST_SOCKET", "/var/lib/incus/unix.socket")
IMAGE = os.environ.get("PIXELS_TEST_IMAGE", "debian/12")


def arguments(doc, rounds, extra=()):
    """--rounds and --strict (on by default: exit 1 when a target is missed; --no-strict only
    reports), plus (flag, type, default) extras."""
    parser = argparse.ArgumentParser(description=doc)
    for flag, kind, default in extra:
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--strict", action=argparse.BooleanOptionalAction, default=True,
                        help="exit 1 when a target is missed (the default; --no-strict only reports)")
    return parser.parse_args()


def figure(label, values, width=40, digits=2, suffix=""):
    """One figure as a line: median, min and max of the seconds measured."""
    return (f"  {label:<{width}} median {statistics.median(values):6.{digits}f} s   min {min(values):6.{digits}f} s"
            f"   max {max(values):6.{digits}f} s{suffix}")


def create_project(admin, name):  # pylint: disable=unused-argument
    """A project with the default project's images, on a bridge of its own (tests/isolated.py):
    its px-NAMEs never clash with the user's sandboxes. The bridge's host address."""
    gateway = isolated.ensure_bridge(isolated.bridge_name(name), name)
    isolated.ensure_project(name, isolated.bridge_name(name))
    return gateway


def drop_project(admin, name):  # pylint: disable=unused-argument
    """The project and its bridge; what cannot go now (still busy) is reported and reused next time."""
    for problem in isolated.drop(name, isolated.bridge_name(name)):
        print(f"could not delete {problem}")


def delete_instances(project, *names):
    for name in names:
        subprocess.run(["incus", "--project", project, "delete", "--force", name], capture_output=True, check=False)

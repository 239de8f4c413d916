"""Bases on the real Incus: `from` chains built in order, cycles refused before anything exists,
the pixels_base module on its own, the built-in bases (dev built once per session; python and node
on top of it), a failed build rebuilt from scratch, rebuilds that do not reach children, apt locks."""

import time

import pytest

from conftest import IMAGE, in_sandbox, incus_cli, instance_names
from site_helpers import OFF, ROLE, failure, instance, ok, query, role_tasks, site, snapshots, summary, verb, write_vars


def config(name, key):
    return (instance(name) or {}).get("config", {}).get(key)


@pytest.fixture(scope="session")
def dev_base(incus, ansible):
    """The built-in base dev, built once for the session from the local image."""
    run = verb(ansible, "base_build", "name=dev", f"pixels_base_image={IMAGE}")
    ok(run)
    yield "dev"
    incus_cli("delete", "--force", "px-base-dev", check=False)


def test_two_level_chain_builds_parents_first(ansible, incus, cleanup, tmp_path):
    (tmp_path / "l1.sh").write_text("#!/bin/sh\nset -e\necho l1 > /etc/bs-l1\n")
    (tmp_path / "l2.yml").write_text(
        "- name: The parent's setup is already there\n"
        "  ansible.builtin.command: cat /etc/bs-l1\n"
        "  changed_when: false\n"
        "- name: Mark\n"
        "  ansible.builtin.copy: {dest: /etc/bs-l2, content: \"l2\\n\", mode: '0644'}\n")
    data = {
        # the child first: the order must come from `from`, not from the list
        "pixels_bases": [{"name": "bs-l2", "from": "bs-l1", "setup": str(tmp_path / "l2.yml")},
                         {"name": "bs-l1", "image": IMAGE, "script": str(tmp_path / "l1.sh")}],
        "pixels_sandboxes": [dict(name="bs-chain", base="bs-l2", **OFF)],
    }
    run = ok(site(ansible, tmp_path, data))
    built = [host for task, host, result in role_tasks(run) if task.startswith("Container of base") and result.get("changed")]
    assert built == ["px-base-bs-l1", "px-base-bs-l2"]
    assert in_sandbox("px-bs-chain", "cat /etc/bs-l1 /etc/bs-l2").split() == ["l1", "l2"]
    assert config("px-bs-chain", "user.pixels.base") == "bs-l2"
    assert config("px-base-bs-l2", "user.pixels.base.parent") == "bs-l1"
    for base in ("px-base-bs-l1", "px-base-bs-l2"):
        assert len(snapshots(base)) == 1, base
        assert instance(base)["status"] == "Stopped"
    l2_before = snapshots("px-base-bs-l2")
    assert config("px-bs-chain", "user.pixels.source") == "base-bs-l2:" + l2_before[0][0]

    # Nothing to do the second time: no rebuild, no change.
    again = ok(site(ansible, tmp_path, data))
    assert again.changed == 0
    assert snapshots("px-base-bs-l2") == l2_before

    # Rebuilding the parent does not flow into the child or into existing sandboxes.
    l1_created = instance("px-base-bs-l1")["created_at"]
    vars_file = write_vars(tmp_path, data)
    ok(verb(ansible, "base_build", "name=bs-l1", "rebuild=true", vars_file=vars_file))
    assert instance("px-base-bs-l1")["created_at"] != l1_created
    assert len(snapshots("px-base-bs-l1")) == 1
    assert snapshots("px-base-bs-l2") == l2_before
    assert in_sandbox("px-bs-chain", "cat /etc/bs-l2").strip() == "l2"

    # A new sandbox from the rebuilt base clones its new (newest) checkpoint.
    ok(verb(ansible, "create", "name=bs-chain2", "base=bs-l1", "provision=false", "devtools=false"))
    assert config("px-bs-chain2", "user.pixels.source") == "base-bs-l1:" + snapshots("px-base-bs-l1")[0][0]


def test_newest_checkpoint_of_a_base_is_cloned(ansible, incus, cleanup, tmp_path):
    data = {"pixels_bases": [{"name": "bs-nw", "image": IMAGE}], "pixels_sandboxes": []}
    ok(site(ansible, tmp_path, data))
    incus_cli("start", "px-base-bs-nw")
    in_sandbox("px-base-bs-nw", "echo newer > /etc/bs-nw")
    time.sleep(1.1)  # labels and creation times one second apart
    ok(verb(ansible, "checkpoint", "name=base-bs-nw", "label=zz-newer"))
    incus_cli("stop", "--force", "px-base-bs-nw")
    ok(verb(ansible, "create", "name=bs-nwbox", "base=bs-nw", "provision=false", "devtools=false"))
    assert in_sandbox("px-bs-nwbox", "cat /etc/bs-nw").strip() == "newer"


def test_cycle_is_refused_before_any_container(ansible, incus, cleanup, tmp_path):
    before = instance_names(incus)
    data = {"pixels_bases": [{"name": "bs-cy1", "from": "bs-cy2"}, {"name": "bs-cy2", "from": "bs-cy3"},
                             {"name": "bs-cy3", "from": "bs-cy1"}, {"name": "bs-fine", "image": IMAGE}],
            "pixels_sandboxes": [dict(name="bs-cybox", base="bs-cy1", **OFF)]}
    message = failure(site(ansible, tmp_path, data))
    assert "cycle" in message and "bs-cy1 -> bs-cy2 -> bs-cy3 -> bs-cy1" in message
    assert instance_names(incus) == before


@pytest.mark.parametrize("base, expected", [
    ({"name": "bs-both", "image": IMAGE, "from": "dev"}, "pixels_bases[0] (bs-both): set either image or from, not both"),
    ({"name": "bs-orphan", "from": "bs-nothing"}, "pixels_bases[0] (bs-orphan): from: 'bs-nothing' is not a declared base"),
])
def test_bad_bases_are_refused_before_any_container(ansible, incus, cleanup, tmp_path, base, expected):
    before = instance_names(incus)
    assert expected in failure(site(ansible, tmp_path, {"pixels_bases": [base]}))
    assert instance_names(incus) == before


def test_sandbox_from_an_unbuilt_base_is_a_clear_error(ansible, incus, cleanup):
    result = ansible.module("pixels_container", name="bs-nobase", base="bs-never")
    assert result.get("failed") and "not built" in result["msg"] and "base_build -e name=bs-never" in result["msg"]
    assert "px-bs-nobase" not in instance_names(incus)


def test_pixels_base_module_directly(ansible, incus, cleanup):
    """pixels_base on its own: check mode makes nothing (Incus asked), diff, the container made and
    marked, a second run changes nothing; a child needs a checkpoint of its parent and clones the
    newest; one that never gets an address is removed again; absent, also in check mode."""
    parent, child = "px-base-bs-direct", "px-base-bs-direct2"
    checked = ansible.adhoc("pixels_base", check=True, diff=True, name="bs-direct", image=IMAGE)
    assert checked["changed"] and checked["diff"] == {"before": {"exists": False}, "after": {"exists": True}}, checked
    assert instance(parent) is None

    made = ansible.adhoc("pixels_base", diff=True, name="bs-direct", image=IMAGE, description="bs direct")
    assert made["changed"] and made["diff"] == {"before": {"exists": False}, "after": {"exists": True}}, made
    box = instance(parent)
    assert (box["status"], box["description"], box["config"]["user.pixels.base"]) == ("Running", "bs direct", "bs-direct")
    inet = [a for a in query(f"/1.0/instances/{parent}/state")["network"]["eth0"]["addresses"] if a["family"] == "inet"]
    assert inet  # waited for its address: ready for its setup
    assert made["base"] == {"name": "bs-direct", "instance": parent, "status": "running", "parent": "",
                            "checkpoints": [], "newest": "", "built": False}

    again = ansible.adhoc("pixels_base", diff=True, name="bs-direct", image=IMAGE)
    assert again["changed"] is False and again["diff"]["before"] == again["diff"]["after"] == {"exists": True}
    assert ansible.adhoc("pixels_base", check=True, name="bs-direct", image="other/image")["changed"] is False
    assert instance(parent)["created_at"] == box["created_at"]

    # Not built (no checkpoint) yet: a child is refused, naming the option and the fix; nothing made.
    refused = ansible.module("pixels_base", name="bs-direct2", **{"from": "bs-direct"})
    assert refused.get("failed") and refused["msg"].startswith("from='bs-direct': px-base-bs-direct has no checkpoint")
    assert "base_build -e name=bs-direct -e rebuild=true" in refused["msg"] and instance(child) is None

    # A checkpoint without a network, then a newer good one: the child clones the newest.
    in_sandbox(parent, "mv /etc/network/interfaces /etc/network/interfaces.off")
    incus_cli("snapshot", "create", parent, "a-nonet")
    in_sandbox(parent, "mv /etc/network/interfaces.off /etc/network/interfaces")
    nonet = ansible.module("pixels_base", name="bs-direct2", wait_timeout=3, **{"from": "bs-direct"})
    assert nonet.get("failed") and "no IPv4 address within 3 s" in nonet["msg"], nonet
    assert "removed again" in nonet["msg"] and instance(child) is None
    time.sleep(1.1)  # creation times one second apart
    in_sandbox(parent, "echo good > /etc/bs-direct")
    incus_cli("snapshot", "create", parent, "b-good")
    assert ansible.adhoc("pixels_base", check=True, name="bs-direct2", **{"from": "bs-direct"})["changed"]
    assert instance(child) is None
    made = ansible.module("pixels_base", name="bs-direct2", **{"from": "bs-direct"})
    assert made["changed"] and made["base"]["parent"] == "bs-direct" and made["base"]["status"] == "running"
    assert in_sandbox(child, "cat /etc/bs-direct").strip() == "good"
    assert config(child, "user.pixels.base") == "bs-direct2" and config(child, "user.pixels.base.parent") == "bs-direct"
    assert ansible.module("pixels_base", name="bs-direct2", **{"from": "bs-direct"})["changed"] is False
    built = ansible.module("pixels_base", name="bs-direct")["base"]
    assert built["checkpoints"] == ["a-nonet", "b-good"] and built["newest"] == "b-good" and built["built"]

    # absent: check mode keeps it; then it goes, with its checkpoints; then nothing to do
    gone = ansible.adhoc("pixels_base", check=True, diff=True, name="bs-direct", state="absent")
    assert gone["changed"] and gone["diff"] == {"before": {"exists": True}, "after": {"exists": False}}
    assert instance(parent) is not None
    assert ansible.module("pixels_base", name="bs-direct", state="absent")["changed"]
    assert instance(parent) is None and snapshots(parent) == []
    assert ansible.module("pixels_base", name="bs-direct", state="absent")["changed"] is False
    assert instance(child)["status"] == "Running"  # a child is a copy, not affected


@pytest.mark.parametrize("args, needles", [
    ({"name": "bs-bad"}, ["Base 'bs-bad' does not exist: give image (such as debian/12) or from"]),
    ({"name": "bs-bad", "image": IMAGE, "from": "dev"}, ["mutually exclusive", "image", "from"]),
    ({"name": "bs_bad", "image": IMAGE}, ["name='bs_bad' is not a valid base name", "55 characters", "px-base-<name>"]),
    ({"name": "x" * 56, "image": IMAGE}, ["is not a valid base name", "55 characters"]),
    ({"name": "bs-bad", "from": "bs-never"}, ["from='bs-never': the base is not built", "base_build -e name=bs-never"]),
    ({"name": "bs-bad", "from": "bs_never"}, ["from='bs_never' is not a valid base name"]),
    ({"name": "bs-bad", "image": "no/such-image", "image_server": ""}, ["no/such-image", "image_server"]),
    ({"name": "bs-bad", "image": IMAGE, "memory": 10}, ["memory=10 is out of range", "at least 64"]),
    ({"name": "bs-bad", "image": IMAGE, "cpu": 0}, ["cpu=0 is out of range"]),
    ({"name": "bs-bad", "image": IMAGE, "wait_timeout": 0}, ["wait_timeout=0", "at least 1"]),
    ({"name": "bs-bad", "state": "built"}, ["state", "one of"]),
])
def test_pixels_base_bad_input(ansible, incus, cleanup, args, needles):
    """Each bad option: a message naming it and the fix, no traceback, no half-made container."""
    before = instance_names(incus)
    result = ansible.module("pixels_base", **args)
    assert result.get("failed"), result
    for needle in needles:
        assert needle in result["msg"], result["msg"]
    assert "Traceback" not in result["msg"] and "Traceback" not in str(result.get("exception", "")), result
    assert instance_names(incus) == before


def test_builtin_dev_base_has_the_tools(ansible, incus, cleanup, dev_base):
    ok(verb(ansible, "create", "name=bs-devbox", f"base={dev_base}", "provision=false", "devtools=false"))
    versions = in_sandbox("px-bs-devbox", "git --version && jq --version && gcc --version | head -1 && "
                                          "make --version | head -1 && curl --version | head -1 && "
                                          "wget --version | head -1 && vim --version | head -1")
    for tool in ("git version", "jq-", "gcc", "GNU Make", "curl", "GNU Wget", "VIM"):
        assert tool in versions
    assert config("px-bs-devbox", "user.pixels.base") == "dev"


def test_builtin_python_and_node_bases(ansible, incus, cleanup, dev_base, tmp_path):
    """The built-in bases python and node, on top of the session's dev. NodeSource's key is checked
    before it is trusted: another key (Debian's, served from a file inside the base, since NodeSource
    is out of reach here) stops node's build with a clear message. A base counts as built once it has
    a checkpoint: the failed node has none, so the next run (Node from Debian) removes it and builds
    it again from scratch, and its sandbox never clones the failed one. Sandboxes from both have
    their tools."""
    data = {"pixels_base_image": IMAGE,
            "pixels_sandboxes": [dict(name="bs-pybox", base="python", **OFF), dict(name="bs-nodebox", base="node", **OFF)]}
    unpinned = {"pixels_node_source": "nodesource",
                "pixels_nodesource_key_url": "file:///etc/apt/trusted.gpg.d/debian-archive-bookworm-automatic.asc"}
    message = failure(site(ansible, tmp_path, data, extra=unpinned))
    assert "not the pinned 6F71F525282841EEDAF851B42F59B5F99B1BE0B4" in message, message
    failed = instance("px-base-node")
    assert failed["status"] == "Running" and snapshots("px-base-node") == [] and instance("px-bs-nodebox") is None
    in_sandbox("px-base-node", "echo failed > /etc/bs-failed")  # what a clone of the failed base would carry

    run = ok(site(ansible, tmp_path, data, extra={"pixels_node_source": "debian"}))
    assert "bases built in this run: node" in summary(run), summary(run)  # python was built, and is kept
    assert run.result(ROLE + "Remove the half-made or replaced container of base node", host="px-base-node")["changed"]
    assert instance("px-base-node")["created_at"] != failed["created_at"]
    for base in ("python", "node"):
        assert config(f"px-base-{base}", "user.pixels.base.parent") == "dev"
        assert len(snapshots(f"px-base-{base}")) == 1 and instance(f"px-base-{base}")["status"] == "Stopped"
    python = in_sandbox("px-bs-pybox", "python3 --version && pip3 --version && pipx --version && "
                                       "python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys; print(sys.prefix)' && "
                                       "git --version && (command -v node || echo no-node)").splitlines()
    assert python[0].startswith("Python 3.") and python[1].startswith("pip ") and python[2][0].isdigit(), python
    assert python[3] == "/tmp/venv" and python[4].startswith("git version") and python[5] == "no-node", python
    node = in_sandbox("px-bs-nodebox", "node --version && npm --version && node -e 'console.log(6 * 7)' && "
                                       "git --version && (cat /etc/bs-failed 2>/dev/null || echo fresh)").splitlines()
    assert node[0].startswith("v") and node[1][0].isdigit() and node[2] == "42", node
    assert node[3].startswith("git version") and node[4] == "fresh", node


# Holds dpkg's frontend lock; with release, lets go 2 s after an apt-get install is seen sleeping
# between its lock attempts (it has failed to get the lock once and said so). Not a fixed time
# after the process appears: on a loaded machine apt-get can take longer than that to reach it.
HOLD_LOCK = """\
- name: Hold dpkg's lock for up to {seconds} s, as unattended-upgrades would
  ansible.builtin.copy:
    dest: /run/bs-hold.py
    mode: "0644"
    content: |
      import fcntl, glob, time
      NANOSLEEP = {{"35", "230", "101", "115"}}  # nanosleep, clock_nanosleep: x86_64, arm64
      def waiting():
          for proc in glob.glob("/proc/[0-9]*"):
              try:
                  args = open(proc + "/cmdline", "rb").read().split(b"\\0")
                  if args[0].endswith(b"apt-get") and b"install" in args:
                      return open(proc + "/syscall").read().split()[0] in NANOSLEEP
              except (OSError, IndexError):
                  continue
          return False
      lock = open("/var/lib/dpkg/lock-frontend", "w")
      fcntl.lockf(lock, fcntl.LOCK_EX)
      open("/run/bs-locked", "w").close()
      deadline, seen = time.monotonic() + {seconds}, None
      while time.monotonic() < deadline:
          if {release} and waiting():
              seen = seen or time.monotonic()
              if time.monotonic() - seen > 2:
                  break
          time.sleep(0.2)
- name: Start the holder
  ansible.builtin.shell: nohup python3 /run/bs-hold.py >/dev/null 2>&1 &
- name: Wait until it holds it
  ansible.builtin.wait_for: {{path: /run/bs-locked, timeout: 30}}
- name: Install with the lock taken
  ansible.builtin.include_role: {{name: homelab.pixels.site, tasks_from: apt}}
  vars:
    pixels_apt_packages: [hello]
    pixels_apt_lock_timeout: {timeout}
    pixels_apt_retries: {retries}
    pixels_apt_retry_delay: 1
"""


def test_apt_waits_for_a_held_lock(ansible, incus, cleanup, tmp_path):
    (tmp_path / "hold.yml").write_text(HOLD_LOCK.format(seconds=120, release=True, timeout=120, retries=1))
    data = {"pixels_bases": [{"name": "bs-lock", "image": IMAGE, "setup": str(tmp_path / "hold.yml")}]}
    run = ok(site(ansible, tmp_path, data))
    apt = run.result(ROLE + "apt-get install hello", host="px-base-bs-lock")
    assert "lock" in apt["stdout"] + apt["stderr"]  # apt said it waited
    assert len(snapshots("px-base-bs-lock")) == 1


def test_apt_gives_up_with_a_clear_message(ansible, incus, cleanup, tmp_path):
    (tmp_path / "hold.yml").write_text(HOLD_LOCK.format(seconds=300, release=False, timeout=1, retries=1))
    data = {"pixels_bases": [{"name": "bs-lock2", "image": IMAGE, "setup": str(tmp_path / "hold.yml")}]}
    message = failure(site(ansible, tmp_path, data))
    assert "apt-get could not install hello in px-base-bs-lock2 after 2 attempts" in message
    assert "python3" in message and "pixels_apt_lock_timeout" in message
    # not checkpointed, so not built: the next run starts it again from scratch
    assert snapshots("px-base-bs-lock2") == []

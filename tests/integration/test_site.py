"""site.yml on the real Incus: from zero, again with changed=0, check mode, absent sandboxes,
and vars files with mistakes refused before anything is created."""

import subprocess

import pytest

import isolated
from conftest import IMAGE, NETWORK, PROJECT, in_sandbox, incus_cli, instance_names
from site_helpers import OFF, SITE, failure, instance, ok, role_tasks, site, snapshots, summary, write_vars


def site_vars(tmp_path, *sandboxes):
    (tmp_path / "sb.sh").write_text("#!/bin/sh\necho sb > /etc/bs-sb\n")
    return {"pixels_base_image": IMAGE,
            "pixels_bases": [{"name": "bs-sb", "image": IMAGE, "script": str(tmp_path / "sb.sh")}],
            "pixels_sandboxes": list(sandboxes)}


def state(client):
    """What check mode must leave alone: instances, their status, limits and checkpoints."""
    result = {}
    for name in instance_names(client):
        data = instance(name)
        result[name] = (data["status"], data["config"].get("limits.memory"), tuple(snapshots(name)))
    return result


def test_site_from_zero_again_and_check_mode(ansible, incus, cleanup, tmp_path):
    boxes = [dict(name="bs-s1", base="bs-sb", cpu=1, memory=512, **OFF),
             dict(name="bs-s2", base="bs-sb", **OFF),
             dict(name="bs-s3", image=IMAGE, state="stopped", **OFF),
             dict(name="bs-s4", source="bs-s1", **OFF)]  # a clone of a sandbox made in the same run
    data = site_vars(tmp_path, *boxes)

    run = ok(site(ansible, tmp_path, data))
    assert in_sandbox("px-bs-s2", "cat /etc/bs-sb").strip() == "sb"
    assert instance("px-bs-s1")["config"]["limits.memory"] == "512MiB"
    assert instance("px-bs-s3")["status"] == "Stopped"
    assert instance("px-bs-s4")["config"]["user.pixels.source"] == "bs-s1"
    lines = summary(run)
    assert lines[0].split() == ["NAME", "STATUS", "IPV4", "BASE", "EGRESS"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if not line.startswith("bases built")}
    assert rows["bs-s1"][1] == "running" and rows["bs-s1"][2].count(".") == 3 and rows["bs-s1"][3] == "bs-sb"
    assert rows["bs-s3"][1] == "stopped" and rows["bs-s3"][3] == "-"
    assert rows["bs-s4"][3] == "bs-sb"  # the clone of a clone keeps the base
    assert "bases built in this run: bs-sb" in lines

    again = ok(site(ansible, tmp_path, data))
    assert again.changed == 0, [(t, h) for t, h, r in again.results if r.get("changed")]

    before = state(incus)
    checked = ok(site(ansible, tmp_path, data, check=True))
    assert checked.changed == 0
    assert state(incus) == before

    # Changes, first in check mode: they are reported and not made.
    incus_cli("snapshot", "create", "px-bs-s2", "kept")
    changed = site_vars(tmp_path, dict(boxes[0], memory=768), dict(boxes[1], state="absent"), boxes[2], boxes[3],
                        dict(name="bs-s5", base="bs-sb", **OFF))
    before = state(incus)
    preview = ok(site(ansible, tmp_path, changed, check=True))
    assert preview.changed > 0
    assert state(incus) == before
    rows = {line.split()[0]: line for line in summary(preview)[1:]}
    assert "absent" in rows["bs-s2"]

    ok(site(ansible, tmp_path, changed))
    assert instance("px-bs-s2") is None and snapshots("px-bs-s2") == []
    pool = incus_cli("profile", "device", "get", "default", "root", "pool").stdout.strip()
    volumes = incus_cli("storage", "volume", "list", pool, "-f", "csv", "-c", "n").stdout
    assert "px-bs-s2" not in volumes  # its checkpoints went with it
    assert instance("px-bs-s5")["status"] == "Running"
    assert instance("px-bs-s1")["config"]["limits.memory"] == "768MiB"


def test_parallel_sandboxes_all_come_up(ansible, incus, cleanup, tmp_path):
    data = site_vars(tmp_path, *[dict(name=f"bs-p{i}", base="bs-sb", **OFF) for i in range(5)])
    run = ok(site(ansible, tmp_path, data))
    # created side by side: one pixels_sandboxes task for all of them
    waves = [result for task, host, result in role_tasks(run) if task.startswith("Sandboxes of wave 1")]
    assert len(waves) == 1 and sorted(r["name"] for r in waves[0]["sandboxes"]) == [f"bs-p{i}" for i in range(5)]
    for i in range(5):
        assert instance(f"px-bs-p{i}")["status"] == "Running"


@pytest.mark.parametrize("sandbox, expected", [
    ({"name": "bs-bad1", "cpus": 2}, "pixels_sandboxes[0] (bs-bad1): unknown key 'cpus'"),
    ({"name": "bs-bad2", "memory": "lots"}, "pixels_sandboxes[0] (bs-bad2).memory must be an integer"),
    ({"name": "bs-bad3", "base": "bs-nope"}, "pixels_sandboxes[0] (bs-bad3).base: base 'bs-nope' is missing"),
    ({"name": "bs-bad4", "egress": {"mode": "open"}}, "pixels_sandboxes[0] (bs-bad4).egress.mode: 'open'"),
    ({"name": "bs-bad5", "provision": {"ssh_key": "x"}}, "pixels_sandboxes[0] (bs-bad5).provision: unknown key 'ssh_key'"),
])
def test_bad_vars_file_is_refused_naming_the_key(ansible, incus, cleanup, tmp_path, sandbox, expected):
    before = instance_names(incus)
    # a good sandbox next to the bad one: nothing at all is created
    data = {"pixels_bases": [{"name": "bs-unused", "image": IMAGE}],
            "pixels_sandboxes": [sandbox, dict(name="bs-good", image=IMAGE, **OFF)]}
    assert expected in failure(site(ansible, tmp_path, data))
    assert instance_names(incus) == before


def test_sandboxes_not_a_list_is_refused(ansible, incus, cleanup, tmp_path):
    message = failure(site(ansible, tmp_path, {"pixels_sandboxes": {"name": "bs-x"}}))
    assert "pixels_sandboxes" in message and "list" in message


def test_pixels_sandboxes_module(ansible, incus, cleanup, tmp_path):
    """The module behind the parallel creation: check mode, diff, one failure does not stop the others."""
    entries = [{"name": "bs-m1", "image": IMAGE}, {"name": "bs-m2", "image": IMAGE, "state": "stopped"},
               {"name": "bs-m3", "base": "bs-never-built"}]
    before = instance_names(incus)
    checked = ansible.adhoc("pixels_sandboxes", check=True, diff=True, sandboxes=entries[:2])
    assert checked["changed"] and instance_names(incus) == before
    assert [d["before_header"] for d in checked["diff"]] == ["bs-m1", "bs-m2"]

    result = ansible.module("pixels_sandboxes", sandboxes=entries)
    assert result["failed"] and "bs-m3: base='bs-never-built'" in result["msg"]
    by_name = {r["name"]: r for r in result["sandboxes"]}
    assert by_name["bs-m1"]["sandbox"]["status"] == "running" and by_name["bs-m1"]["sandbox"]["ipv4"]
    assert by_name["bs-m2"]["sandbox"]["status"] == "stopped"
    assert incus.instances.get("px-bs-m1").status == "Running" and incus.instances.get("px-bs-m2").status == "Stopped"
    assert instance("px-bs-m3") is None

    again = ansible.module("pixels_sandboxes", sandboxes=entries[:2])
    assert not again.get("failed") and again["changed"] is False

    duplicate = ansible.module("pixels_sandboxes", sandboxes=[entries[0], entries[0]])
    assert duplicate["failed"] and "bs-m1 appear more than once" in duplicate["msg"]
    both = ansible.module("pixels_sandboxes", sandboxes=[{"name": "bs-m4", "image": IMAGE, "base": "x"}])
    assert both["failed"] and "mutually exclusive" in both["msg"]


def test_site_provisions_restricts_and_opens_a_console(ansible, incus, cleanup, tmp_path):
    """The whole chain for one sandbox: egress first (fail closed), then provisioning, sessions and
    the SSH console; `ssh px-NAME.exec` works as pixel, sudo stays restricted; a second run changes nothing."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    box = {"name": "bs-full", "image": IMAGE, "devtools": False,
           "provision": {"ssh_keys": [(tmp_path / "id_ed25519.pub").read_text().strip()],
                         "env": {"BS_PLAIN": "plain"}},
           "egress": {"mode": "allowlist", "allow": ["10.9.0.0/16"]}}
    data = {"pixels_sandboxes": [box]}
    extra = {"pixels_console_dir": str(tmp_path / "pixels"), "pixels_console_ssh_config": str(tmp_path / "config"),
             "pixels_console_identity_file": str(key)}

    run = ok(site(ansible, tmp_path, data, extra=extra))
    rows = {line.split()[0]: line.split() for line in summary(run)[1:]}
    assert rows["bs-full"][4] == "allowlist"

    def ssh(*command):
        return subprocess.run(["ssh", "-F", str(tmp_path / "config"), "px-bs-full.exec", *command],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)

    login = ssh("id -un; echo $BS_PLAIN; cat /etc/pixels/egress/mode")
    assert login.returncode == 0 and login.stdout.split() == ["pixel", "plain", "allowlist"], login.stderr
    assert ssh("sudo", "-n", "true").returncode != 0  # the egress policy owns sudo, provisioning left it alone
    assert "pixels-session" in in_sandbox("px-bs-full", "ls /usr/local/bin")

    again = ok(site(ansible, tmp_path, data, extra=extra))
    assert again.changed == 0, [(task, host) for task, host, result in again.results if result.get("changed")]


def test_site_check_mode_on_an_empty_project(ansible, incus, tmp_path):
    """site.yml --check where nothing exists yet (a new user's first look): it passes, shows what
    it would build and create, and creates nothing."""
    empty = f"{PROJECT}-empty"
    isolated.ensure_project(empty, NETWORK)
    try:
        data = site_vars(tmp_path, dict(name="bs-e1", base="bs-sb", **OFF), dict(name="bs-e2", image=IMAGE, **OFF))
        run = ok(ansible.playbook(SITE, check=True, env={"PIXELS_INCUS_PROJECT": empty},
                                  args=["-e", "@" + write_vars(tmp_path, data)]))
        assert run.changed > 0
        rows = {line.split()[0]: line for line in summary(run)[1:] if not line.startswith("bases")}
        assert {"bs-e1", "bs-e2"} <= set(rows), rows
        listed = subprocess.run(["incus", "list", "--project", empty, "--format", "csv", "-c", "n"],
                                capture_output=True, text=True, check=True).stdout
        assert listed.strip() == "", listed
    finally:
        assert not isolated.drop(empty, None)


def test_module_defaults_group(ansible, incus, cleanup):
    """module_defaults for group/homelab.pixels.pixels reach every module of the group: the
    connection options (here the project: the environment names another one)."""
    run = ansible.playbook(f"""
        - hosts: localhost
          gather_facts: false
          module_defaults:
            group/homelab.pixels.pixels:
              project: {PROJECT}
          tasks:
            - name: Create
              homelab.pixels.pixels_container:
                name: bs-defaults
                state: stopped
            - name: Info
              homelab.pixels.pixels_container_info:
                name: bs-defaults
            - name: Checkpoint
              homelab.pixels.pixels_checkpoint:
                name: bs-defaults
                label: one
        """, env={"PIXELS_INCUS_PROJECT": f"{PROJECT}-nowhere"})
    ok(run)
    assert instance("px-bs-defaults")["status"] == "Stopped"
    assert run.result("Info")["sandboxes"][0]["instance"] == "px-bs-defaults"
    assert [label for label, _created in snapshots("px-bs-defaults")] == ["one"]

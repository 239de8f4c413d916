"""Every verb playbook once, as `ansible-playbook homelab.pixels.<verb> -e ...` (values as strings,
as they come from a shell), without a terminal on stdin as in CI."""

from conftest import IMAGE, in_sandbox, incus_cli, instance_names
from site_helpers import failure, instance, ok, output, snapshots, verb, write_vars


def test_every_verb(ansible, incus, cleanup, tmp_path):
    (tmp_path / "vb.sh").write_text("#!/bin/sh\necho vb > /etc/bs-vb\n")
    base = {"name": "bs-vb", "image": IMAGE, "script": str(tmp_path / "vb.sh")}
    declared = {"name": "bs-v4", "base": "bs-vb", "memory": 640, "provision": False, "devtools": False}
    vars_file = write_vars(tmp_path, {"pixels_bases": [base], "pixels_sandboxes": [declared]})

    # base_build: a user base declared in a vars file
    ok(verb(ansible, "base_build", "name=bs-vb", vars_file=vars_file))
    assert len(snapshots("px-base-bs-vb")) == 1

    # create: from the base, with options as strings; again: no change
    ok(verb(ansible, "create", "name=bs-v1", "base=bs-vb", "cpu=1", "memory=768", "provision=false", "devtools=false"))
    assert in_sandbox("px-bs-v1", "cat /etc/bs-vb").strip() == "vb"
    assert instance("px-bs-v1")["config"]["limits.memory"] == "768MiB"
    assert ok(verb(ansible, "create", "name=bs-v1", "base=bs-vb", "provision=false", "devtools=false")).changed == 0
    ok(verb(ansible, "create", "name=bs-v2", f"image={IMAGE}", "state=stopped", "provision=false", "devtools=false"))
    assert instance("px-bs-v2")["status"] == "Stopped"
    assert "base 'bs-none' is missing" in failure(verb(ansible, "create", "name=bs-v3", "base=bs-none"))
    # a sandbox declared in the vars file is made as declared, -e options on top
    ok(verb(ansible, "create", "name=bs-v4", "cpu=1", vars_file=vars_file))
    assert instance("px-bs-v4")["config"]["limits.memory"] == "640MiB"
    assert instance("px-bs-v4")["config"]["limits.cpu"] == "1"
    assert instance("px-bs-v4")["config"]["user.pixels.base"] == "bs-vb"

    # list: sandboxes and bases
    listing = "\n".join(ok(verb(ansible, "list")).result("Sandboxes and bases")["msg"])
    assert "(base) bs-vb" in listing
    assert any(line.split()[:2] == ["bs-v1", "running"] for line in listing.splitlines())

    # stop, start (two at once)
    ok(verb(ansible, "stop", "name=bs-v1"))
    assert instance("px-bs-v1")["status"] == "Stopped"
    ok(verb(ansible, "start", "name=bs-v1,bs-v2"))
    assert instance("px-bs-v1")["status"] == instance("px-bs-v2")["status"] == "Running"

    # checkpoint, restore (the newest without a label), list and delete checkpoints
    in_sandbox("px-bs-v1", "echo one > /root/marker")
    ok(verb(ansible, "checkpoint", "name=bs-v1", "label=ready"))
    in_sandbox("px-bs-v1", "echo two > /root/marker")
    ok(verb(ansible, "restore", "name=bs-v1"))
    assert in_sandbox("px-bs-v1", "cat /root/marker").strip() == "one"
    listed = ok(verb(ansible, "checkpoint", "name=bs-v1", "state=list")).result("Checkpoints")["msg"]
    assert listed[1].startswith("ready")
    ok(verb(ansible, "checkpoint", "name=bs-v1", "label=ready", "state=absent"))
    assert snapshots("px-bs-v1") == []

    # network: shows the policy in force, sets a mode with a domain list, and back
    shown = ok(verb(ansible, "network", "name=bs-v1")).result("Egress")["msg"]
    assert shown["mode"] == "unrestricted" and shown["enforced"]
    shown = ok(verb(ansible, "network", "name=bs-v1", "mode=allowlist", "allow=bs-v2.incus,10.9.0.0/16")).result("Egress")["msg"]
    assert shown["mode"] == "allowlist" and shown["enforced"] and shown["cidrs"] == ["10.9.0.0/16"], shown
    assert in_sandbox("px-bs-v1", "cat /etc/pixels/egress/mode").strip() == "allowlist"
    assert instance("px-bs-v1")["config"]["user.pixels.egress"] == "allowlist"
    shown = ok(verb(ansible, "network", "name=bs-v1", "mode=unrestricted")).result("Egress")["msg"]
    assert shown["mode"] == "unrestricted"
    assert "mode=open is not an egress mode" in failure(verb(ansible, "network", "name=bs-v1", "mode=open"))
    assert instance("px-bs-v1")["status"] == "Running"

    # status, with the dev tools' status read inside the sandbox (none installed here)
    run = ok(verb(ansible, "status", "name=bs-v1"))
    status = run.result("Sandbox")["msg"]
    assert status["status"] == "running" and status["base"] == "bs-vb" and status["ipv4"]
    assert run.result("homelab.pixels.site : Dev tools", host="bs-v1")["pixels_site__devtools"]["state"] == "absent"
    assert "There is no sandbox bs-gone" in failure(verb(ansible, "status", "name=bs-gone"))

    # destroy: refused without a terminal to confirm and without force; then forced
    refused = verb(ansible, "destroy", "name=bs-v1")
    assert "-e force=true" in failure(refused) and "Not destroyed" in output(refused)
    assert "px-bs-v1" in instance_names(incus)
    ok(verb(ansible, "destroy", "name=bs-v1,bs-v2,bs-v4", "force=true"))
    assert not {"px-bs-v1", "px-bs-v2", "px-bs-v4"} & set(instance_names(incus))

    # verbs without a name say what to give
    assert "-e name=mybox" in failure(verb(ansible, "start"))
    incus_cli("delete", "--force", "px-base-bs-vb", check=False)

"""`make site`'s example, examples/homelab.yml, as it is, run by site.yml in the test project.

It must end with an agent-ready sandbox: SSH reaches it as pixel with the key the play made (the
test's HOME has no ~/.ssh keys, like a fresh machine), Claude Code, Codex and OpenCode answer inside,
egress `agent` is in force (npm's registry reached, anything else refused by the sandbox's rules),
and the summary says all that. A second run changes nothing; a CLI that stops answering shows as
missing. The real npm install makes this the slowest test here (about 5 minutes in all).
"""

import os
import re
import stat
import subprocess
import time

import pytest

from ansible_fixtures import ROOT
from conftest import in_sandbox, incus_cli, instance_names
from site_helpers import SITE, failed_messages, ok, summary

EXAMPLE = os.path.join(ROOT, "examples", "homelab.yml")
CLIS = ("claude", "codex", "opencode")


class Example:
    def __init__(self, ansible, home):
        self.ansible = ansible
        self.home = home
        # ssh expands ~ in its configuration with the account's home, not $HOME: the console files
        # get an absolute directory under the test's HOME.
        self.console = home / ".ssh" / "pixels"
        self.env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "PWD": ROOT}

    def site(self):
        start = time.monotonic()
        run = self.ansible.playbook(SITE, env=self.env, extra_vars={"pixels_console_dir": str(self.console)},
                                    args=["-e", "@" + EXAMPLE])
        return ok(run), time.monotonic() - start

    def ssh(self, command):
        return subprocess.run(["ssh", "-F", str(self.home / ".ssh" / "config"), "-o", "BatchMode=yes",
                               "px-demo.exec", command], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def example(ansible, incus, tmp_path_factory):
    before = set(instance_names(incus))
    box = Example(ansible, tmp_path_factory.mktemp("home"))
    first, first_s = box.site()
    again, again_s = box.site()
    print(f"\nexamples/homelab.yml: first run {first_s:.0f} s, second run {again_s:.1f} s")
    yield {"box": box, "first": first, "again": again, "again_s": again_s}
    # Through the module, so that the host's egress rules of px-demo go with it.
    ansible.module("pixels_container", name="demo", state="absent")
    for name in set(instance_names(incus)) - before:
        incus_cli("delete", "--force", name, check=False)


def details(run):
    """The summary's lines about demo, without the name."""
    return [line[len("demo: "):] for line in summary(run) if line.startswith("demo: ")]


def test_the_play_made_a_key_pair_and_the_console_uses_it(example):
    home = example["box"].home
    key = home / ".config" / "pixels" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (home / ".config" / "pixels" / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    assert not list((home / ".ssh").glob("id_*")), "the play must not write keys into ~/.ssh"
    config = (example["box"].console / "hosts" / "px-demo.conf").read_text()
    assert f"IdentityFile \"{key}\"\n" in config, config
    assert f"Host px-*\nInclude \"{example['box'].console}/hosts/*.conf\"\nHost *\n" in (home / ".ssh" / "config").read_text()


def test_ssh_reaches_pixel_and_the_agent_clis_answer(example):
    login = example["box"].ssh("id -un; claude --version; codex --version; opencode --version")
    assert login.returncode == 0, login.stderr
    lines = login.stdout.splitlines()
    assert lines[0] == "pixel"
    assert "Claude Code" in lines[1], lines
    assert lines[2].startswith("codex-cli "), lines
    assert re.match(r"^\d+\.\d+", lines[3]), lines


def test_egress_agent_is_in_force(ansible, example):
    policy = ansible.module("pixels_egress_info", name="demo")["policy"]
    assert policy["mode"] == "agent" and policy["enforced"], policy
    assert "registry.npmjs.org" in policy["domains"] and "deb.debian.org" in policy["domains"]
    # The npm registry gets through (as the dev tools installer needed)...
    reached = example["box"].ssh("curl -s -o /dev/null -w '%{http_code}' --max-time 20 https://registry.npmjs.org/")
    assert reached.stdout == "200", (reached.stdout, reached.stderr)

    # ...and a port of the host, which is not in the preset, is refused by the sandbox's rules.
    def refused():
        listed = in_sandbox("px-demo", "nft list chain inet pixels_egress allowed")
        return int(re.search(r"counter packets (\d+) bytes \d+ comment \"refused\"", listed).group(1))

    counted = refused()
    gateway = in_sandbox("px-demo", "ip -4 route show default | awk '{print $3}'").strip()
    tried = example["box"].ssh(f"curl -s --max-time 10 http://{gateway}:9/")
    assert tried.returncode != 0
    assert refused() > counted


def test_the_summary_says_how_to_get_in_what_answers_and_the_egress(example):
    lines = details(example["first"])
    assert "ssh px-demo" in lines, summary(example["first"])
    assert "egress agent, in force" in lines, lines
    clis = [line for line in lines if line.startswith("agent CLIs: ")]
    assert len(clis) == 1 and "missing" not in clis[0], lines
    for cli in CLIS:
        assert f"{cli} (" in clis[0], clis
    assert not [line for line in lines if "installing" in line or "failed" in line], lines
    rows = {line.split()[0]: line.split() for line in summary(example["first"])[1:4]}
    assert rows["demo"][1] == "running" and rows["demo"][4] == "agent", rows
    assert rows["scratch"][1] == "stopped", rows


def test_a_second_run_changes_nothing_in_seconds(example):
    again = example["again"]
    assert again.changed == 0, [(task, host) for task, host, result in again.results if result.get("changed")]
    assert example["again_s"] < 90, example["again_s"]  # seconds here; a bound for a loaded CI machine
    assert details(again) == details(example["first"])


def test_a_cli_that_does_not_answer_shows_as_missing(example):
    in_sandbox("px-demo", "mv /usr/local/bin/opencode /usr/local/bin/opencode.away")
    try:
        run, _seconds = example["box"].site()
    finally:
        in_sandbox("px-demo", "mv /usr/local/bin/opencode.away /usr/local/bin/opencode")
    assert run.changed == 0, failed_messages(run)
    clis = [line for line in details(run) if line.startswith("agent CLIs: ")]
    assert clis and clis[0].endswith("; missing: opencode") and "opencode (" not in clis[0], clis

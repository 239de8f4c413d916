"""Egress policy logic and rendering: validation, merging, nftables, sudoers, safe-apt, ACLs, host rules.

Rendered files are checked by the tools that will read them (nft -c, visudo -c, sh) where
this machine has them.
"""

import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from ansible_collections.homelab.pixels.plugins.module_utils import egress, egress_apply, egress_host, egress_templates
from ansible_collections.homelab.pixels.plugins.module_utils.backend import ExecResult
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError

ROOT = os.geteuid() == 0
needs_nft = pytest.mark.skipif(not (ROOT and shutil.which("nft")), reason="nft -c needs root and nft")
needs_visudo = pytest.mark.skipif(not shutil.which("visudo"), reason="no visudo here")


# -- validation and merging ------------------------------------------------------------------

@pytest.mark.parametrize("entry, expected", [
    ("PyPI.org.", ("domain", "pypi.org")),
    ("api.github.com", ("domain", "api.github.com")),
    ("eg-web1.incus", ("domain", "eg-web1.incus")),
    ("10.0.0.0/8", ("cidr", "10.0.0.0/8")),
    ("192.0.2.7", ("cidr", "192.0.2.7/32")),
    ("2001:DB8::/32", ("cidr", "2001:db8::/32")),
    ("fd00::1", ("cidr", "fd00::1/128")),
])
def test_entries_are_normalised(entry, expected):
    assert egress.parse_entry(entry, "allow") == expected


@pytest.mark.parametrize("entry, message", [
    ("not a domain!", "not a valid domain name"),
    ("-bad.example.com", "not a valid domain name"),
    ("localhost", "not a valid domain name"),
    ("a" * 64 + ".com", "not a valid domain name"),
    ("10.0.0.1/33", "not a valid address or CIDR"),
    ("10.0.0.1/24", "did you mean 10.0.0.0/24"),
    ("300.1.1.1", "not a valid address or CIDR"),
    ("fd00::zz", "not a valid address or CIDR"),
    ("*.github.com", "wildcards"),
    ("", "empty"),
    ("a.com;nft flush ruleset", "not a valid domain name"),
])
def test_bad_entries_name_the_option(entry, message):
    with pytest.raises(PixelsError) as caught:
        egress.parse_entry(entry, "allow")
    assert message in caught.value.message and caught.value.message.startswith("allow")


def test_bad_mode():
    with pytest.raises(PixelsError, match="mode='open' is not one of unrestricted, agent, allowlist"):
        egress.desired_policy(None, "open")


def test_agent_starts_from_the_preset_and_keeps_its_mode():
    policy = egress.desired_policy(None, "agent", allow=["pypi.internal.lan", "10.20.0.0/16"], deny=["gitlab.com"])
    assert policy["mode"] == "agent"
    for domain in ("api.anthropic.com", "registry.npmjs.org", "deb.debian.org", "pypi.internal.lan"):
        assert domain in policy["domains"]
    assert "gitlab.com" not in policy["domains"]
    assert policy["cidrs"] == ["10.20.0.0/16", "20.209.0.0/16", "34.117.0.0/16", "142.250.0.0/15",
                               "172.217.0.0/16", "185.199.108.0/22", "216.58.0.0/16"]


def test_preset_has_what_the_issue_lists():
    assert len(egress.AGENT_DOMAINS) == 26 and len(egress.AGENT_CIDRS) == 6
    assert "github-releases.githubusercontent.com" in egress.AGENT_DOMAINS


def test_preset_can_be_replaced():
    policy = egress.desired_policy(None, "agent", preset=["a.example.com", "192.0.2.0/24"])
    assert policy == {"mode": "agent", "domains": ["a.example.com"], "cidrs": ["192.0.2.0/24"]}


def test_allow_and_deny_build_on_the_current_list():
    current = {"mode": "allowlist", "domains": ["a.example.com"], "cidrs": ["192.0.2.0/24"]}
    added = egress.desired_policy(current, "allowlist", allow=["b.example.com", "2001:db8::/32"])
    assert added == {"mode": "allowlist", "domains": ["a.example.com", "b.example.com"],
                     "cidrs": ["192.0.2.0/24", "2001:db8::/32"]}
    removed = egress.desired_policy(added, "allowlist", deny=["a.example.com", "192.0.2.0/24"])
    assert removed == {"mode": "allowlist", "domains": ["b.example.com"], "cidrs": ["2001:db8::/32"]}
    replaced = egress.desired_policy(added, "allowlist", domains=["c.example.com"])
    assert replaced["domains"] == ["c.example.com"] and replaced["cidrs"] == []


def test_switching_to_allowlist_starts_empty():
    agent = egress.desired_policy(None, "agent")
    assert egress.desired_policy(agent, "allowlist") == {"mode": "allowlist", "domains": [], "cidrs": []}


def test_deny_of_an_entry_not_in_the_list_fails():
    current = {"mode": "allowlist", "domains": ["a.example.com"], "cidrs": []}
    with pytest.raises(PixelsError, match="deny: b.example.com is not in the allowlist policy"):
        egress.desired_policy(current, "allowlist", deny=["b.example.com"])


def test_unrestricted_takes_no_list():
    assert egress.desired_policy(None, "unrestricted") == {"mode": "unrestricted", "domains": [], "cidrs": []}
    with pytest.raises(PixelsError, match="allow has no effect with mode=unrestricted"):
        egress.desired_policy(None, "unrestricted", allow=["a.example.com"])


@pytest.mark.parametrize("user", ["root", "Pixel", "pi xel", "a;b", ""])
def test_bad_user(user):
    with pytest.raises(PixelsError, match="user="):
        egress.check_user(user)


# -- files rendered for the sandbox ----------------------------------------------------------

POLICY = {"mode": "allowlist", "domains": ["a.example.com", "b.example.com"],
          "cidrs": ["192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32"]}


def test_rendered_files_and_modes():
    files = egress.render_files(POLICY)
    assert files[egress.MODE_FILE] == ("allowlist\n", 0o644)
    assert files["/etc/pixels/egress/domains"][0] == "a.example.com\nb.example.com\n"
    assert files["/etc/sudoers.d/pixel"][1] == 0o440
    assert files["/usr/local/sbin/safe-apt"][1] == 0o755
    rules = files["/etc/pixels/egress/rules.nft"][0]
    assert "elements = { 192.0.2.0/24, 198.51.100.7/32 }" in rules and "elements = { 2001:db8::/32 }" in rules
    assert "policy drop;" in rules and 'log prefix "pixels-egress drop: "' in rules and "limit rate" in rules
    # DNS only to the resolvers, never port 53 to anyone
    dns = [line for line in rules.splitlines() if "dport 53" in line]
    assert dns and all("@resolvers" in line for line in dns)
    unit = files["/etc/systemd/system/pixels-egress.service"][0]
    assert "Before=network-pre.target" in unit and "WantedBy=sysinit.target" in unit and "ExecStop" not in unit
    dropin = files["/etc/systemd/system/networking.service.d/pixels-egress.conf"][0]
    assert "Requires=pixels-egress.service" in dropin
    assert "OnUnitActiveSec=300s" in files["/etc/systemd/system/pixels-egress-refresh.timer"][0]


def test_unrestricted_renders_full_sudo_only():
    files = egress.render_files(egress.desired_policy(None, "unrestricted"))
    assert sorted(files) == sorted([egress.MODE_FILE, egress.POLICY_FILE, egress.SUDOERS_FILE])
    assert "pixel ALL=(ALL) NOPASSWD:ALL" in files[egress.SUDOERS_FILE][0]


def test_restricted_sudo_lists_no_wildcard_shell_editor_or_pager():
    sudoers = egress.render_files(POLICY, user="agent")[egress.SUDOERS_FILE][0]
    rules = [line for line in sudoers.splitlines() if line and not line.startswith(("#", "Defaults"))]
    assert rules == ["agent ALL=(root) NOPASSWD: /usr/local/sbin/safe-apt"]
    for forbidden in ("*", "systemctl", "nft", "dpkg", "less", "vi", "sh ", "ALL=(ALL) NOPASSWD:ALL"):
        assert forbidden not in rules[0]


@needs_visudo
@pytest.mark.parametrize("mode", ["allowlist", "unrestricted"])
def test_sudoers_pass_visudo(tmp_path, mode):
    policy = POLICY if mode == "allowlist" else egress.desired_policy(None, mode)
    path = tmp_path / "pixel"
    path.write_text(egress.render_files(policy)[egress.SUDOERS_FILE][0])
    proc = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_nft
def test_ruleset_passes_nft_check(tmp_path):
    rules = egress.render_files(POLICY)["/etc/pixels/egress/rules.nft"][0]
    dynamic = tmp_path / "dynamic.nft"
    dynamic.write_text("flush set inet pixels_egress domain4\nadd element inet pixels_egress domain4 { 203.0.113.9 }\n"
                       "add element inet pixels_egress resolvers4 { 10.123.0.1 }\n")
    path = tmp_path / "rules.nft"
    path.write_text(rules.replace("/etc/pixels/egress/dynamic.nft", str(dynamic)))
    proc = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    empty = egress.render_files({"mode": "allowlist", "domains": [], "cidrs": []})["/etc/pixels/egress/rules.nft"][0]
    path.write_text(empty.replace("/etc/pixels/egress/dynamic.nft", str(dynamic)))
    assert subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, check=False).returncode == 0


SAFE_APT_REFUSED = [
    [], ["update", "-o", "APT::Update::Pre-Invoke::=/bin/sh"], ["-o", "x=y", "update"],
    ["install"], ["install", "./evil.deb"], ["install", "/tmp/evil.deb"], ["install", "evil.deb"],
    ["install", "nftables-"], ["install", "hello;sh"], ["install", "hello\n-o"], ["install", "--reinstall", "x"],
    ["install", "hello", "-oDpkg::Pre-Invoke::=sh"], ["install", "Hello"], ["install", "a/b"], ["install", "a..b"],
    ["remove", "nftables"], ["purge", "sudo"], ["changelog", "sudo"], ["download", "hello"], ["source", "hello"],
    ["upgrade", "-y"], ["update", "x"], ["install", "$(id)"], ["install", "`id`"],
    # apt patterns and regular expressions: only literal names of known packages
    ["install", "a.+"], ["install", "hell.+"], ["install", "hello", "g+.*"], ["install", "~nhello"], ["install", "?name(hello)"],
    ["install", "hello~"], ["install", "hello=~1"], ["install", "hello:"], ["install", "hello=2.1=3"], ["install", "nosuchpackage"],
    # downgrades: hello 2.10-3 is installed (the stand-in dpkg-query says so)
    ["install", "hello=2.10-2"], ["install", "hello=2.9"],
]

# What the stand-ins know: the repositories' package names, the installed hello.
KNOWN = ["hello", "hello-traditional", "g++", "libc6", "tzdata", "nftables", "libstdc++6"]


def safe_apt(tmp_path, args):
    """Run the rendered safe-apt with stand-ins for apt-get (echoes its arguments and environment),
    apt-cache pkgnames and dpkg-query; dpkg --compare-versions is the host's."""
    text = egress.render_files(POLICY)["/usr/local/sbin/safe-apt"][0]
    stand_in = tmp_path / "bin"
    stand_in.mkdir(exist_ok=True)
    tools = {
        "apt-get": '#!/bin/sh\necho "$@"; env | sort\n',
        "apt-cache": "#!/bin/sh\n[ \"$1\" = pkgnames ] || exit 1\nprintf '%s\\n' " + " ".join(KNOWN) + " | grep -F -- \"$2\" | grep -- \"^$2\" || true\n",
        "dpkg-query": '#!/bin/sh\nfor a; do last=$a; done\n[ "$last" = hello ] && printf "installed 2.10-3"\n[ "$last" = hello ]\n',
        "pixels-egress-refresh": "#!/bin/sh\nexit 0\n",
    }
    for name, body in tools.items():
        (stand_in / name).write_text(body)
        (stand_in / name).chmod(0o755)
    text = text.replace("PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"PATH={stand_in}:/usr/bin:/bin", 1)
    script = tmp_path / "safe-apt"
    script.write_text(text.replace("/usr/local/sbin/pixels-egress-refresh", str(stand_in / "pixels-egress-refresh")))
    return subprocess.run(["/bin/sh", str(script), *args], capture_output=True, text=True, env={"APT_CONFIG": "/tmp/x"}, check=False)


@pytest.mark.skipif(not shutil.which("dpkg"), reason="dpkg --compare-versions needs dpkg")
@pytest.mark.parametrize("args", SAFE_APT_REFUSED, ids=repr)
def test_safe_apt_refuses(tmp_path, args):
    proc = safe_apt(tmp_path, args)
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    assert "usage: sudo safe-apt" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("package, message", [
    ("a.+", "no package named 'a.+' in the configured repositories (literal names, no patterns"),
    ("~nhello", "package names start with a letter or digit"),
    ("hello=2.10-2", "hello 2.10-3 is installed; safe-apt does not downgrade"),
    ("hello:", "a literal package name [a-z0-9][a-z0-9+.-]*"),
])
def test_safe_apt_says_why(tmp_path, package, message):
    proc = safe_apt(tmp_path, ["install", package])
    assert message in proc.stderr, proc.stderr


@pytest.mark.skipif(not shutil.which("dpkg"), reason="dpkg --compare-versions needs dpkg")
@pytest.mark.parametrize("args", [["update"], ["upgrade"], ["install", "hello", "g++", "libc6:amd64", "tzdata=2024a-0+deb12u1"],
                                  ["install", "hello=2.10-3", "libstdc++6"], ["install", "hello=2.11-1"]])
def test_safe_apt_passes_package_names_to_apt_get(tmp_path, args):
    """Accepted arguments reach apt-get after the fixed options, downgrades switched off."""
    proc = safe_apt(tmp_path, args)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first == ("-y --no-remove -o APT::Get::allow-downgrades=false -o Dpkg::Options::=--force-confdef "
                     "-o Dpkg::Options::=--force-confold " + " ".join(args))
    assert "APT_CONFIG" not in proc.stdout and "DEBIAN_FRONTEND=noninteractive" in proc.stdout


def test_refresh_script_is_valid_sh(tmp_path):
    script = tmp_path / "refresh"
    script.write_text(egress.render_files(POLICY)["/usr/local/sbin/pixels-egress-refresh"][0])
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    for mode in ("allowlist", "unrestricted"):
        policy = POLICY if mode == "allowlist" else egress.desired_policy(None, mode)
        installer = tmp_path / f"install-{mode}"
        installer.write_text(egress.installer(policy, egress.render_files(policy)))
        assert subprocess.run(["sh", "-n", str(installer)], check=False).returncode == 0


def test_installer_locks_sudo_before_loading_rules():
    text = egress.installer(POLICY, egress.render_files(POLICY))
    load = text.index("pixels-egress-refresh --locked --load")
    assert text.index("visudo -cq") < text.index("put /etc/sudoers.d/pixel") < load
    assert text.index("put /etc/pixels/egress/mode") < load


@pytest.mark.parametrize("mode", ["allowlist", "unrestricted"])
def test_installer_takes_the_lock_with_a_limit_before_changing_anything(mode):
    """A busy lock fails the installer before any file changes (the files and the kernel agree)."""
    policy = POLICY if mode == "allowlist" else egress.desired_policy(None, mode)
    text = egress.installer(policy, egress.render_files(policy), lock_timeout=7)
    locked = text.index("\ntake_lock 7\n")
    first_change = min(text.index(marker) for marker in ("\nput ", "\nrm -f /etc", "\nmkdir -p /etc") if marker in text)
    assert locked < first_change
    assert "flock -w \"$1\" 9" in text and "state_dir=/run/pixels-egress" in text
    assert "/run/pixels-egress.lock\n" not in text.replace("rm -f /run/pixels-egress.lock\n", "")


def test_locks_and_state_live_in_root_only_directory():
    files = egress.render_files(POLICY)
    refresh = files["/usr/local/sbin/pixels-egress-refresh"][0]
    for text in (refresh, egress.installer(POLICY, files), egress.INSTALL_WRAPPER):
        assert "chmod 0700 \"$state_dir\"" in text
        assert "mktemp -d /run/pixels-egress" not in text  # temporary files too, under the root-only directory
    assert 'exec 9>"$state_dir/lock"' in refresh and 'flock -w "$1" 9' in refresh
    assert 'take_lock "$lock_wait"' in refresh and "lock_wait=60\n" in refresh
    assert "trap 'exit 129' HUP INT TERM" in refresh and "trap 'exit 129' HUP INT TERM" in egress.INSTALL_WRAPPER
    assert '"$state_dir/down"' in egress.installer(POLICY, files)


@pytest.mark.skipif(not shutil.which("flock"), reason="needs flock")
def test_the_lock_helpers_wait_with_a_limit_and_name_the_holder(tmp_path):
    """The rendered shell snippets on this machine: a held lock fails after the limit with the PID."""
    state_dir = tmp_path / "state"
    snippet = egress.render(egress_templates.STATE_DIR_SH + egress_templates.LOCK_SH, state_dir=str(state_dir))
    script = tmp_path / "lock.sh"
    script.write_text(snippet + "take_lock 1\necho got it\n")
    assert subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True).stdout == "got it\n"
    assert oct(state_dir.stat().st_mode & 0o777) == "0o700"
    holder = subprocess.Popen(["flock", "-x", str(state_dir / "lock"), "sleep", "30"],  # pylint: disable=consider-using-with
                              start_new_session=True)
    try:
        subprocess.run(["sh", "-c", f"until flock -n {state_dir / 'lock'} true; [ $? -eq 1 ]; do sleep 0.05; done"], check=True, timeout=10)
        proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False, timeout=20)
    finally:
        os.killpg(holder.pid, 9)  # flock and its sleep, which holds the lock too
        holder.wait()
    assert proc.returncode == 5 and proc.stdout == "", proc
    assert f"stayed held for 1 s by PID {holder.pid} (flock -x {state_dir}" in proc.stderr, proc.stderr
    # a link (or anything but root's directory) in the directory's place is replaced, not followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(state_dir)
    state_dir.symlink_to(elsewhere)
    proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False)
    assert proc.stdout == "got it\n" and "was not root's directory" in proc.stderr, proc
    assert state_dir.is_dir() and not state_dir.is_symlink() and not list(elsewhere.iterdir())


def test_dhcp_goes_to_the_network_server_and_broadcast_only():
    rules = egress.render_files(POLICY, dhcp4=["10.123.0.1"])["/etc/pixels/egress/rules.nft"][0]
    assert 'ip daddr { 255.255.255.255, 10.123.0.1 } udp sport 68 udp dport 67 accept' in rules
    assert "\n        udp sport 68 udp dport 67 accept" not in rules
    bare = egress.render_files(POLICY)["/etc/pixels/egress/rules.nft"][0]
    assert 'ip daddr { 255.255.255.255 } udp sport 68 udp dport 67 accept' in bare
    script = egress_host.render_host_rules("t", "px-box", ["10.123.0.5"], [], dict(VIEW, dhcp4=["10.123.0.1"]), EMPTY)
    assert "add rule inet t sb_default__px_box ip daddr { 255.255.255.255, 10.123.0.1 } udp sport 68 udp dport 67 accept" in script
    assert " udp dport 67 accept" not in script.replace("udp sport 68 udp dport 67 accept", "")
    acl = [r for r in egress_host.render_acl("px-box", dict(VIEW, dhcp4=["10.123.0.1"]))["egress"] if r.get("destination_port") == "67"]
    assert acl == [{"action": "allow", "state": "enabled", "protocol": "udp", "destination": "255.255.255.255,10.123.0.1",
                    "source_port": "68", "destination_port": "67", "description": "DHCPv4 to the network's server"}]


def test_bundle_holds_the_files_installer_and_manifest():
    files = egress.render_files(POLICY)
    payload = egress.bundle(files, "echo hi\n")
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        names = tar.getnames()
        assert "install.sh" in names and "manifest" in names and "stage/etc/sudoers.d/pixel" in names
        assert tar.getmember("stage/etc/sudoers.d/pixel").mode == 0o440
        assert tar.extractfile("manifest").read().decode() == egress.manifest(files)
    # the manifest changes with any file, so it tells whether the sandbox is up to date
    other = egress.render_files(dict(POLICY, domains=["a.example.com"]))
    assert egress.manifest(other) != egress.manifest(files)


def test_policy_view_reports_unresolved_and_addresses():
    state = {"resolvers": ["10.123.0.1"], "resolved": {"a.example.com": ["2001:db8::5", "192.0.2.5"],
                                                       "b.example.com": []}, "resolved_at": "t"}
    view = egress.policy_view(POLICY, state, "nftables")
    assert view["addresses"] == ["192.0.2.5", "2001:db8::5"] and view["unresolved"] == ["b.example.com"]
    assert view["mode"] == "allowlist" and view["host_layer"] == "nftables" and view["resolvers"] == ["10.123.0.1"]


def test_templates_are_plain_strings_for_ansiballz():
    # Modules cannot read role files; every template ships inside module_utils.
    for name in ("RULES", "REFRESH", "SAFE_APT", "SUDOERS_RESTRICTED", "SUDOERS_FULL", "UNIT_BOOT", "INSTALL"):
        assert isinstance(getattr(egress_templates, name), str)


# -- host layer: Incus ACL and host nftables -------------------------------------------------

VIEW = {"mode": "agent", "cidrs": ["185.199.108.0/22", "2001:db8::/32"], "addresses": ["192.0.2.5", "2001:db8:1::5"],
        "resolvers": ["10.123.0.1"]}


def test_acl_rendering():
    body = egress_host.render_acl("px-box", VIEW)
    assert body["name"] == "px-box-egress" and body["ingress"] == []
    dns = [r for r in body["egress"] if r.get("destination_port") == "53"]
    assert {r["protocol"] for r in dns} == {"udp", "tcp"} and all(r["destination"] == "10.123.0.1" for r in dns)
    allowed = body["egress"][-1]
    assert allowed["action"] == "allow"
    assert allowed["destination"] == "185.199.108.0/22,192.0.2.5,2001:db8::/32,2001:db8:1::5"
    assert all(set(r) <= {"action", "state", "protocol", "destination", "source_port", "destination_port", "description"}
               for r in body["egress"])
    nic = egress_host.nic_acl_config("px-box")
    assert nic == {"security.acls": "px-box-egress", "security.acls.default.egress.action": "drop",
                   "security.acls.default.egress.logged": "true", "security.acls.default.ingress.action": "allow"}


def test_acl_name_fits_incus_limits():
    name = egress_host.acl_name("px-" + "a" * 60)
    assert len(name) <= 63 and name.endswith("-egress")


def test_acl_without_allowed_addresses_keeps_dns_only():
    body = egress_host.render_acl("px-box", {"mode": "allowlist", "cidrs": [], "addresses": [], "resolvers": ["10.1.0.1"]})
    assert [r.get("destination_port") for r in body["egress"]] == ["53", "53", "67"]


EMPTY = {"exists": False, "chains": set(), "src4": {}, "src6": {}}


def test_host_rules_for_a_new_table():
    script = egress_host.render_host_rules("pixels_eg_test", "px-box", ["10.123.0.5"], ["fd00::5"], VIEW, EMPTY)
    assert "add rule inet pixels_eg_test from_sandboxes_fwd ip saddr vmap @src4" in script
    assert "type filter hook forward priority -10; policy accept;" in script
    assert "add element inet pixels_eg_test src4 { 10.123.0.5 : jump sb_default__px_box }" in script
    assert "add element inet pixels_eg_test src6 { fd00::5 : jump sb_default__px_box }" in script
    assert "ip daddr { 185.199.108.0/22, 192.0.2.5 } accept" in script
    assert "ip daddr { 10.123.0.1 } meta l4proto { tcp, udp } th dport 53 accept" in script
    assert script.strip().splitlines()[-3].endswith("counter drop")


def test_host_rules_replace_old_keys_and_keep_base_rules_once():
    current = {"exists": True, "chains": {"from_sandboxes_fwd", "sb_default__px_box", "sb_default__px_other"},
               "src4": {"10.123.0.4": "sb_default__px_box", "10.123.0.9": "sb_default__px_other"}, "src6": {}}
    script = egress_host.render_host_rules("t", "px-box", ["10.123.0.5"], [], VIEW, current)
    assert "vmap @src4" not in script
    assert "delete element inet t src4 { 10.123.0.4 }" in script and "10.123.0.9" not in script
    removal = egress_host.render_host_rules("t", "px-box", [], [], None, current)
    assert removal.splitlines() == ["delete element inet t src4 { 10.123.0.4 }", "flush chain inet t sb_default__px_box",
                                    "delete chain inet t sb_default__px_box"]
    assert egress_host.host_rules_current("t", "px-box", ["10.123.0.4"], [], current)
    assert not egress_host.host_rules_current("t", "px-box", ["10.123.0.5"], [], current)


def test_host_rules_drop_deleted_sandboxes_and_reused_addresses():
    current = {"exists": True, "chains": {"sb_p__px_box", "sb_p__px_gone", "sb_q__px_gone", "sb_p__px_old"},
               "src4": {"10.0.0.7": "sb_p__px_gone", "10.0.0.8": "sb_q__px_gone", "10.0.0.5": "sb_p__px_old"},
               "src6": {}}
    script = egress_host.render_host_rules("t", "px-box", ["10.0.0.5"], [], VIEW, current, project="p",
                                           live=["px-box", "px-old"])
    # px-gone of project p is deleted: its chain and key go; project q's is not ours to judge
    assert "delete element inet t src4 { 10.0.0.5, 10.0.0.7 }" in script
    assert "delete chain inet t sb_p__px_gone" in script and "sb_q__px_gone" not in script
    # px-old lost its address to px-box: nothing leads to its chain any more
    assert "delete chain inet t sb_p__px_old" in script
    assert "add element inet t src4 { 10.0.0.5 : jump sb_p__px_box }" in script


@needs_nft
def test_host_rules_pass_nft_check():
    script = egress_host.render_host_rules("pixels_eg_unit", "px-box", ["10.123.0.5"], ["fd00::5"], VIEW, EMPTY)
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr + script


def test_host_table_name():
    assert egress_host.check_table("pixels_eg_test") == "pixels_eg_test"
    with pytest.raises(PixelsError, match="host_table='a-b'"):
        egress_host.check_table("a-b")


def test_read_host_table_parses_nft_json(monkeypatch):
    listing = {"nftables": [
        {"metainfo": {}}, {"table": {"family": "inet", "name": "t"}},
        {"chain": {"family": "inet", "table": "t", "name": "sb_default__px_box"}},
        {"map": {"family": "inet", "name": "src4", "table": "t", "type": "ipv4_addr", "map": "verdict",
                 "elem": [["10.123.0.5", {"jump": {"target": "sb_default__px_box"}}]]}},
    ]}

    def fake_nft(args, stdin=None):
        return 0, json.dumps(listing), ""

    monkeypatch.setattr(egress_host, "_nft", fake_nft)
    state = egress_host.read_host_table("t")
    assert state == {"exists": True, "chains": {"sb_default__px_box"}, "src4": {"10.123.0.5": "sb_default__px_box"}, "src6": {}}


def test_installer_failure_quotes_its_output_without_escape_sequences():
    """The sandbox's output reaches the operator's terminal: root there controls it."""
    class Backend:
        def execute(self, instance, argv, stdin=b""):
            return ExecResult(1, b"", b"x" * 10000 + b"\n\x1b]0;owned\x07\x1b[2Jnft: rules rejected\n")

    with pytest.raises(PixelsError) as caught:
        egress.install(Backend(), "px-evil", POLICY, egress.render_files(POLICY))
    message = caught.value.message
    assert "stays locked down" in message and "nft: rules rejected" in message
    assert "\x1b" not in message and "\x07" not in message
    assert len(message) < 5000


def test_network_is_held_back_for_networkd_as_for_ifupdown():
    """ubuntu/24.04 configures its network with systemd-networkd (debian/12, where the integration
    tests run, with ifupdown): both get the drop-in that keeps the network down until the rules
    loaded, both are restarted when the links come back, and unrestricted removes both drop-ins."""
    files = egress.render_files(POLICY)
    for unit in ("systemd-networkd.service", "networking.service", "ifup@.service"):
        dropin = files[f"/etc/systemd/system/{unit}.d/pixels-egress.conf"]
        assert dropin[1] == 0o644
        assert "[Unit]\nRequires=pixels-egress.service\nAfter=pixels-egress.service\n" in dropin[0]
    script = egress.installer(POLICY, files)
    assert "for unit in networking.service systemd-networkd.service; do" in script
    assert 'systemctl is-enabled --quiet "$unit"' in script and 'systemctl restart "$unit"' in script
    opened = egress.installer(egress.desired_policy(None, "unrestricted"), {})
    for unit in ("systemd-networkd.service", "networking.service", "ifup@.service"):
        assert f"rm -f /etc/systemd/system/{unit}.d/pixels-egress.conf\n" in opened


# -- the order of a change: narrow the host layer first ---------------------------------------

STATE = {"resolvers": ["10.123.0.1"], "resolved": {"a.example.com": ["192.0.2.1"], "b.example.com": ["192.0.2.2"]}}
CURRENT = {"mode": "allowlist", "domains": ["a.example.com", "b.example.com"], "cidrs": ["10.9.0.0/16", "10.8.0.0/16"]}


def test_narrowed_view_is_what_both_policies_allow():
    desired = egress.desired_policy(CURRENT, "allowlist", allow=["c.example.com", "10.7.0.0/16"],
                                    deny=["b.example.com", "10.8.0.0/16"])
    view = egress_apply.narrowed_view(CURRENT, STATE, desired)
    assert view["domains"] == ["a.example.com"] and view["addresses"] == ["192.0.2.1"]
    assert view["cidrs"] == ["10.9.0.0/16"] and view["resolvers"] == ["10.123.0.1"]  # DNS stays: the refresh needs it


def test_no_narrowing_when_a_change_only_adds_or_nothing_is_enforced_yet():
    grown = egress.desired_policy(CURRENT, "allowlist", allow=["c.example.com"])
    assert egress_apply.narrowed_view(CURRENT, STATE, grown) is None
    fresh = {"mode": "unrestricted", "domains": [], "cidrs": []}
    assert egress_apply.narrowed_view(fresh, {}, egress.desired_policy(fresh, "allowlist", allow=["a.example.com"])) is None
    # a change of mode narrows too (the host layer is reloaded with the entries both modes have)
    agent = egress.desired_policy(CURRENT, "agent", domains=CURRENT["domains"] + CURRENT["cidrs"])
    assert egress_apply.narrowed_view(CURRENT, STATE, agent)["mode"] == "agent"


def test_lock_timeout_is_checked():
    with pytest.raises(PixelsError, match="lock_timeout=0.5 must be between 1 and 3600 seconds"):
        egress_apply.apply(None, "px-box", {"lock_timeout": 0.5}, False)

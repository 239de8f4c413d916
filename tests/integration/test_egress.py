"""pixels_egress and pixels_egress_info against the real Incus.

Two helper containers serving HTTP play the internet (eg-web1, eg-web2 on the tests' bridge, found by
Incus' DNS as <name>.incus); eg-far sits on a second bridge (egbr1), so traffic to it is routed
through the host, where the host nftables layer sees it. Escape attempts run as `pixel`.
"""

import functools
import json
import subprocess
import time

import pytest

from conftest import EGRESS_TABLE_TAG, GATEWAY, IMAGE, PROJECT, in_sandbox, incus_cli, wait_booted, wait_for, wait_ready

BOX = "eg-box"
INSTANCE = "px-eg-box"
HOST_TABLE = f"pxeg_{EGRESS_TABLE_TAG}"  # a table per test project
BRIDGE = "egbr1"
WEB1, WEB2, FAR = "eg-web1", "eg-web2", "eg-far"
# Candidate subnets for the second bridge (the first free one is used).
SUBNETS = [("10.124.0.1/24", "fd00:124::1/64"), ("10.134.0.1/24", "fd00:134::1/64"), ("10.144.0.1/24", "fd00:144::1/64")]

# A UDP "DNS server" on the helper: answers any datagram, so a query that gets out gets an answer.
UDP_ECHO = "import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(('::', 53))\nwhile True:\n d,a=s.recvfrom(512); s.sendto(d,a)"
# As pixel: a DNS query to a server that is not configured; prints answered / no answer.
DNS_PROBE = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
             "query = b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00'"
             " + b'\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01'\n"
             "try:\n s.sendto(query, (sys.argv[1], 53)); s.recvfrom(512); print('answered')\n"
             "except OSError as e:\n print('no answer', e)")


# A UDP "DHCP server" on the helpers (the internet, not the sandbox's network): echoes to the sender.
UDP_ECHO_67 = "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 67))\nwhile True:\n d,a=s.recvfrom(512); s.sendto(d,a)"
# As root in the sandbox: a datagram to port 67 of an address, from a given source port.
DHCP_PROBE = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', int(sys.argv[2]))); s.settimeout(2)\n"
              "try:\n s.sendto(b'pixels', (sys.argv[1], 67)); s.recvfrom(512); print('answered')\n"
              "except OSError as e:\n print('no answer', e)")
# As pixel: an flock on every file and directory it can open under the given trees, held by one
# process; the list of what it holds in /tmp/held.
HOLD_ALL = """\
import fcntl, os, resource, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for top in sys.argv[1:]:
    for root, dirs, files in os.walk(top):
        for path in [root] + [os.path.join(root, name) for name in files]:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(path)
            except OSError:
                pass
with open("/tmp/held.new", "w") as handle:
    handle.write("".join(p + "\\n" for p in held))
os.rename("/tmp/held.new", "/tmp/held")
time.sleep(900)
"""


def pixel(instance, command, timeout=60):
    """Run a shell command as pixel (uid 1000) inside the sandbox; the CompletedProcess."""
    return incus_cli("exec", instance, "--user", "1000", "--group", "1000", "--env", "HOME=/home/pixel",
                     "--cwd", "/home/pixel", "--", "sh", "-c", command, check=False, timeout=timeout)


def reaches(instance, host, port=80, family=""):
    """Whether pixel gets the helper's page (refused at once; a drop costs 5 s)."""
    proc = pixel(instance, f"curl {family} -sS --connect-timeout 5 -m 10 -o /dev/null -w '%{{http_code}}' http://{host}:{port}/")
    return proc.stdout.strip() == "200"


# The timer's refresh reloads a table a test removed on purpose: the tests start it by hand.
NO_TIMER = 86400


def egress(ansible, **args):
    args.setdefault("name", BOX)
    args.setdefault("refresh_interval", NO_TIMER)
    args.setdefault("host_layer", "nftables")
    args.setdefault("host_table", HOST_TABLE)
    return ansible.module("pixels_egress", **args)


def ok(result):
    assert not result.get("failed"), result
    assert "Traceback" not in json.dumps(result), result
    return result


def address(instance, family="inet"):
    proc = subprocess.run(["incus", "query", f"/1.0/instances/{instance}/state?project={PROJECT}"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, f"the state of {instance}: {proc.stderr.strip()}"
    state = json.loads(proc.stdout)
    for name, nic in (state.get("network") or {}).items():
        for addr in nic["addresses"]:
            if name != "lo" and addr["family"] == family and addr["scope"] == "global":
                return addr["address"]
    return None


def wait_address(instance, family="inet", timeout=60):
    return wait_for(functools.partial(address, instance, family), timeout, f"a {family} address on {instance}", 0.3)


def serve(instance):
    in_sandbox(instance, f"mkdir -p /srv && echo {instance} > /srv/index.html && "
               "systemd-run --unit eg-http python3 -m http.server 80 --bind :: --directory /srv && "
               # resolved's stub holds port 53 on loopback; the helper needs no DNS of its own
               f"systemctl stop systemd-resolved && systemd-run --unit eg-udp python3 -c \"{UDP_ECHO}\"")


def bridge_netfilter():
    """Whether bridged traffic passes the host's inet hooks (br_netfilter loaded and on)."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as handle:
            return handle.read().strip() == "1"
    except OSError:
        return False


def host_routes():
    return subprocess.run(["ip", "route"], capture_output=True, text=True, check=False).stdout


@pytest.fixture(scope="module")
def world(incus):
    """web1, web2 on the tests' bridge, far on a second bridge; the sandbox eg-box with a user pixel."""
    made = []
    network = None
    try:
        # leftovers of an interrupted run (the incus fixture already deleted the instances)
        incus_cli("network", "delete", BRIDGE, check=False)
        subprocess.run(["nft", "delete", "table", "inet", HOST_TABLE], capture_output=True, check=False)
        routes = host_routes()
        for v4, v6 in SUBNETS:
            if v4.rsplit(".", 1)[0] + ".0/24" not in routes:
                break
        incus_cli("network", "create", BRIDGE, f"ipv4.address={v4}", "ipv4.nat=true",
                  f"ipv6.address={v6}", "ipv6.nat=true")
        network = BRIDGE
        for name, extra in ((WEB1, []), (WEB2, []), (FAR, ["--network", BRIDGE])):
            incus_cli("launch", IMAGE, name, *extra)
            made.append(name)
        for name in (WEB1, WEB2, FAR):
            wait_address(name)
            wait_ready(name)  # serve() stops resolved: not while dhclient's hook restarts it
            serve(name)
        yield {"far": wait_address(FAR), "far6": wait_address(FAR, "inet6"), "web2": address(WEB2)}
    finally:
        for name in made + [INSTANCE, "px-eg-clone", "px-eg-six", "px-eg-fc", "px-eg-off"]:
            incus_cli("delete", "--force", name, check=False)
        subprocess.run(["nft", "delete", "table", "inet", HOST_TABLE], capture_output=True, check=False)
        if network:
            incus_cli("network", "delete", network, check=False)


@pytest.fixture(scope="module")
def box(world, ansible):
    ok(ansible.module("pixels_container", name=BOX))
    wait_ready(INSTANCE)
    in_sandbox(INSTANCE, "id pixel >/dev/null 2>&1 || useradd -m -u 1000 -s /bin/bash pixel")
    yield INSTANCE


def web_names():
    return f"{WEB1}.incus", f"{WEB2}.incus"


def test_allowlist_allows_one_helper_refuses_the_other(ansible, box):
    web1, web2 = web_names()
    ok(egress(ansible, mode="unrestricted"))
    assert reaches(box, web1) and reaches(box, web2)  # the control: both answer without a policy

    first = ok(egress(ansible, mode="allowlist", domains=[web1]))
    assert first["changed"]
    policy = first["policy"]
    assert policy["mode"] == "allowlist" and policy["domains"] == [web1] and policy["unresolved"] == []
    assert policy["resolved"][web1] == [address(WEB1)] and policy["resolvers"] == [GATEWAY]
    assert policy["host_layer"] == "nftables"
    assert reaches(box, web1)
    assert not reaches(box, web2)
    # refused packets reach the logging rule (the kernel logs from containers only with nf_log_all_netns=1)
    refused = in_sandbox(box, "nft list chain inet pixels_egress allowed | grep 'comment \"refused\"'")
    assert "counter packets 0 " not in refused and "counter packets" in refused, refused
    again = ok(egress(ansible, mode="allowlist", domains=[web1]))
    assert again["changed"] is False, again
    # replies to inbound SSH get out (the host is not on the list)
    banner = subprocess.run(["timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{address(box)}/22; head -c 8 <&3"],
                            capture_output=True, text=True, check=False)
    assert banner.stdout.startswith("SSH-2.0"), banner

    info = ok(ansible.module("pixels_egress_info", name=BOX))["policy"]
    assert info["mode"] == "allowlist" and info["enforced"] and info["domains"] == [web1]
    assert info["host_layer"] == "nftables" and info["resolved"] == policy["resolved"]
    assert in_sandbox(box, "cat /etc/pixels/egress/mode") == "allowlist\n"
    assert incus_cli("config", "get", box, "user.pixels.egress").stdout.strip() == "allowlist"
    # loaded at boot, before the network, and the network needs it
    assert in_sandbox(box, "systemctl is-enabled pixels-egress.service pixels-egress-refresh.timer").split() == ["enabled", "enabled"]
    assert "Requires=pixels-egress.service" in in_sandbox(box, "systemctl cat networking.service")
    # IPv6 rules exist and end in a drop, as for IPv4
    rules = in_sandbox(box, "nft list table inet pixels_egress")
    assert "ip6 daddr @domain6 accept" in rules and "ip6 daddr @cidr6 accept" in rules and "policy drop" in rules


def test_allow_deny_check_mode_and_diff(ansible, box):
    web1, web2 = web_names()
    ok(egress(ansible, mode="allowlist", domains=[web1]))

    checked = ansible.adhoc("pixels_egress", check=True, diff=True, name=BOX, allow=[web2],
                            host_layer="nftables", host_table=HOST_TABLE)
    assert checked["changed"], checked
    assert f"domain: {web2}" in checked["diff"]["after"] and web2 not in checked["diff"]["before"], checked
    assert not reaches(box, web2)  # check mode changed nothing

    allowed = ok(egress(ansible, allow=[web2]))
    assert allowed["changed"] and allowed["policy"]["domains"] == sorted([web1, web2])
    assert reaches(box, web2) and reaches(box, web1)
    assert ok(egress(ansible, allow=[web2]))["changed"] is False

    denied = ok(egress(ansible, deny=[web2]))
    assert denied["changed"] and denied["policy"]["domains"] == [web1]
    assert not reaches(box, web2) and reaches(box, web1)


def test_bad_input_fails_clearly_and_changes_nothing(ansible, box):
    web1, web2 = web_names()
    ok(egress(ansible, mode="allowlist", domains=[web1]))
    before = in_sandbox(box, "cat /etc/pixels/egress/policy.json; sha256sum /etc/pixels/egress/rules.nft")
    cases = [
        (dict(mode="blocked"), "mode"),
        (dict(allow=["not a domain!"]), "allow entry 'not a domain!'"),
        (dict(allow=["10.0.0.1/33"]), "allow entry '10.0.0.1/33'"),
        (dict(allow=["10.0.0.1/24"]), "did you mean 10.0.0.0/24"),
        (dict(allow=["*.github.com"]), "wildcards"),
        (dict(deny=[web2]), f"deny: {web2} is not in the allowlist policy"),
        (dict(mode="unrestricted", allow=[web2]), "allow has no effect with mode=unrestricted"),
        (dict(refresh_interval=1), "refresh_interval=1"),
        (dict(resolve_timeout=60), "resolve_timeout=60.0 must be between 0.1 and 30"),
        (dict(user="root"), "user='root'"),
        (dict(host_table="bad-name"), "host_table='bad-name'"),
    ]
    for args, message in cases:
        result = egress(ansible, **args)
        assert result.get("failed") and message in result["msg"], (args, result)
        assert "Traceback" not in json.dumps(result), result
    missing = egress(ansible, name="eg-nothing", mode="agent")
    assert missing.get("failed") and "does not exist" in missing["msg"], missing
    ok(ansible.module("pixels_container", name="eg-off", state="stopped"))
    stopped = egress(ansible, name="eg-off", mode="agent")
    assert stopped.get("failed") and "is stopped" in stopped["msg"] and "start it first" in stopped["msg"], stopped
    incus_cli("delete", "--force", "px-eg-off")
    assert in_sandbox(box, "cat /etc/pixels/egress/policy.json; sha256sum /etc/pixels/egress/rules.nft") == before
    assert reaches(box, web1) and not reaches(box, web2)


ESCAPES = [
    "nft flush ruleset",
    "nft delete table inet pixels_egress",
    "sudo -n nft flush ruleset",
    "sudo -n /usr/sbin/nft delete table inet pixels_egress",
    "systemctl stop pixels-egress.service",
    "sudo -n systemctl stop pixels-egress.service",
    "sudo -n systemctl disable pixels-egress.service",
    "sudo -n systemctl stop pixels-egress-refresh.timer",
    "sudo -n sh -c id",
    "sudo -n -s id",
    "sudo -n -i id",
    "sudo -n -e /etc/sudoers.d/pixel",
    "sudoedit -n /etc/sudoers.d/pixel",
    "sudo -n dpkg-query -l",
    "sudo -n apt-get update",
    "sudo -n safe-apt -o APT::Update::Pre-Invoke::=/bin/sh update",
    "sudo -n safe-apt update -o APT::Update::Pre-Invoke::=/bin/sh",
    "sudo -n safe-apt install -o Dpkg::Pre-Invoke::=/bin/sh hello",
    "sudo -n safe-apt install ./evil.deb",
    "sudo -n safe-apt install /tmp/evil.deb",
    "sudo -n safe-apt install evil.deb",
    "sudo -n safe-apt install nftables-",
    "sudo -n safe-apt install '~nhello'",
    "sudo -n safe-apt install '?name(hello)'",
    "sudo -n safe-apt install 'a.+'",
    "sudo -n safe-apt install 'hello;sh'",
    "sudo -n safe-apt install \"$(printf 'hello\\n-o')\"",
    "sudo -n safe-apt install --reinstall nftables",
    "sudo -n safe-apt changelog sudo",
    "sudo -n safe-apt remove nftables",
    "sudo -n safe-apt download hello",
    "sudo -n env APT_CONFIG=/tmp/x safe-apt update",
    "sudo -n PAGER=/bin/sh safe-apt update",
    "sudo -n -u nobody id",
    "systemctl mask pixels-egress.service",
    "resolvectl dns eth0 10.123.0.99",
    "echo 10.0.0.0/8 >> /etc/pixels/egress/domains",
    "echo 'flush ruleset' > /etc/pixels/egress/rules.nft",
    "cp /bin/sh /usr/local/sbin/safe-apt",
    "echo 'pixel ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/zz",
]


def test_pixel_cannot_escape(ansible, box, world):
    web1, web2 = web_names()
    ok(egress(ansible, mode="allowlist", domains=[web1, "deb.debian.org", "eg-apt.test"]))
    # a local package and a fake apt config pixel prepared
    pixel(box, "printf 'x' > /tmp/evil.deb; printf 'APT::Update::Pre-Invoke {\"/bin/sh\";};' > /tmp/x")
    listed = pixel(box, "sudo -n -l").stdout
    assert "/usr/local/sbin/safe-apt" in listed and "(ALL) NOPASSWD: ALL" not in listed, listed
    for command in ESCAPES:
        proc = pixel(box, command + " </dev/null")
        assert proc.returncode != 0, (command, proc.stdout, proc.stderr)
        assert "uid=0" not in proc.stdout, (command, proc.stdout)
    # still in force
    assert in_sandbox(box, "nft list table inet pixels_egress >/dev/null && echo loaded").strip() == "loaded"
    assert in_sandbox(box, "systemctl is-enabled pixels-egress.service").strip() == "enabled"
    assert not reaches(box, web2) and reaches(box, web1)
    # safe-apt's and the script's files are root's
    assert in_sandbox(box, "stat -c '%u %a' /usr/local/sbin/safe-apt /etc/sudoers.d/pixel "
                      "/usr/local/sbin/pixels-egress-refresh /etc/pixels/egress/rules.nft").split() == [
        "0", "755", "0", "440", "0", "755", "0", "644"]
    # DNS only to the configured resolver: the helper's UDP/53 answers when unrestricted
    probe = f"python3 -c \"{DNS_PROBE}\" {world['web2']}"
    assert pixel(box, probe).stdout.startswith("no answer")
    assert pixel(box, f"getent ahosts {web1}").returncode == 0  # through the configured resolver
    # safe-apt does install from the configured repositories (deb.debian.org is allowed)
    in_sandbox(box, f"echo '{world['web2']} eg-apt.test' >> /etc/hosts")  # a mirror that moved
    installed = pixel(box, "sudo -n safe-apt update && sudo -n safe-apt install hello && /usr/bin/hello", timeout=300)
    assert installed.returncode == 0 and "Hello, world!" in installed.stdout, installed.stdout + installed.stderr
    # literal names only: a pattern would have reached apt (and installed hello-traditional)
    for package, why in (("hello.traditional", "no package named 'hello.traditional'"), ("hell.+", "no package named"),
                         ("hello=2.10-2", "hello 2.10-3 is installed; safe-apt does not downgrade")):
        refused = pixel(box, f"sudo -n safe-apt install '{package}'")
        assert refused.returncode == 2 and why in refused.stderr, (package, refused.stdout, refused.stderr)
        assert "Reading package lists" not in refused.stdout, (package, refused.stdout)  # apt never ran
    assert in_sandbox(box, "dpkg-query -W -f '${Version}' hello") == "2.10-3"
    # and re-resolves the allowed domains before apt connects
    state = json.loads(in_sandbox(box, "sed -i '/eg-apt.test/d' /etc/hosts; cat /etc/pixels/egress/state.json"))
    assert state["resolved"]["eg-apt.test"] == [world["web2"]], state

    ok(egress(ansible, mode="unrestricted"))
    assert pixel(box, probe).stdout.startswith("answered")  # the control
    assert pixel(box, "sudo -n id -u").stdout.strip() == "0"


def nft_set(instance, name):
    return in_sandbox(instance, f"nft list set inet pixels_egress {name}")


def host_table():
    return subprocess.run(["nft", "list", "table", "inet", HOST_TABLE], capture_output=True, text=True, check=False).stdout


def test_pixel_cannot_hold_the_policy(ansible, box, world):
    """pixel holds an flock on everything it can open under /run, /etc/pixels and /usr/local/sbin
    (the policy's lock used to be one of them): a deny still finishes in time, in force in both
    layers, and the refresh and safe-apt do not hang either."""
    web1, _web2 = web_names()
    far = world["far"]
    ok(egress(ansible, mode="allowlist", domains=[web1, far]))
    assert reaches(box, far)
    in_sandbox(box, f"rm -f /tmp/held; cat > /tmp/hold.py <<'EOF'\n{HOLD_ALL}EOF\nchmod 644 /tmp/hold.py")
    holder = pixel(box, "setsid python3 /tmp/hold.py /run /etc/pixels /usr/local/sbin </dev/null >/dev/null 2>&1 & echo $!")
    holder = holder.stdout.strip()
    try:
        held = wait_for(lambda: in_sandbox(box, "cat /tmp/held 2>/dev/null", check=False), what="pixel's locks").split()
        assert "/run" in held and len(held) > 5, held  # pixel does hold what it can read
        assert not [path for path in held if path.startswith("/run/pixels-egress")], held
        # nor can pixel plant anything where the policy's directory is made
        planted = pixel(box, "mkdir /run/pixels-egress.x; ln -s /tmp /run/pixels-egress.y; ls -A /run/pixels-egress/")
        assert planted.returncode != 0 and "Permission denied" in planted.stderr, planted
        assert in_sandbox(box, "ls -d /run/pixels-egress.x /run/pixels-egress.y 2>/dev/null; true") == ""

        started = time.monotonic()
        # (a hung module is killed at 150 s: no result, the test fails)
        denied = ansible.adhoc("pixels_egress", wrapper=("timeout", "150"), name=BOX, deny=[far], host_layer="nftables",
                               host_table=HOST_TABLE, refresh_interval=NO_TIMER)
        took = time.monotonic() - started
        assert not denied.get("failed") and denied["changed"], denied
        assert took < 60, took  # the default lock_timeout: no lock was waited for
        # in force in both layers: the files, the kernel's set, the host's rules
        assert far not in in_sandbox(box, "cat /etc/pixels/egress/policy.json") and far not in nft_set(box, "cidr4")
        assert f"{address(box)} : jump" in host_table() and far not in host_table()
        assert not reaches(box, far) and reaches(box, web1)

        def refresh():
            return in_sandbox(box, "timeout 100 /usr/local/sbin/pixels-egress-refresh; echo rc=$?")

        def upgrade():
            return pixel(box, "timeout 100 sudo -n safe-apt upgrade >/dev/null 2>&1; echo rc=$?", timeout=150).stdout

        for who, command in (("the refresh", refresh), ("safe-apt", upgrade)):
            started = time.monotonic()
            out = command()
            assert "rc=124" not in out and time.monotonic() - started < 60, (who, out)
        # root inside flushes its own layer: the host's still refuses
        in_sandbox(box, "nft flush ruleset")
        assert not reaches(box, far)
    finally:
        in_sandbox(box, f"kill -- -{holder}", check=False)  # the holder's session (setsid)


def test_a_stuck_lock_fails_in_time_naming_the_holder_and_the_stricter_policy_holds(ansible, box, world):
    """Root's own refresh hangs holding the lock: the task fails after lock_timeout naming it,
    changes nothing inside (files and kernel agree), and the host layer already refuses what the
    task denied: the stricter of the two policies is in force."""
    web1, _web2 = web_names()
    far = world["far"]
    ok(egress(ansible, mode="allowlist", domains=[web1, far]))
    assert reaches(box, far)
    holder = in_sandbox(box, "setsid flock -x /run/pixels-egress/lock sleep 900 </dev/null >/dev/null 2>&1 & echo $!").strip()
    try:
        wait_for(lambda: in_sandbox(box, "flock -n /run/pixels-egress/lock true || echo held", check=False).strip(),
                 what="the lock held")
        before = in_sandbox(box, "cat /etc/pixels/egress/policy.json /etc/pixels/egress/rules.nft")
        started = time.monotonic()
        failed = egress(ansible, deny=[far], lock_timeout=3)
        took = time.monotonic() - started
        assert failed.get("failed"), failed
        assert f"stayed held for 3 s by PID {holder} (flock -x /run/pixels-egress/lock sleep 900)" in failed["msg"], failed
        assert "Nothing was changed inside the sandbox" in failed["msg"], failed
        assert took < 30, took
        # inside: the old policy, on disk and in the kernel alike
        assert in_sandbox(box, "cat /etc/pixels/egress/policy.json /etc/pixels/egress/rules.nft") == before
        assert far in nft_set(box, "cidr4")
        # outside: narrowed first, so the denied helper is refused already
        assert far not in host_table() and f"{address(box)} : jump" in host_table()
        assert not reaches(box, far) and reaches(box, web1)
        assert in_sandbox(box, "ls -A /run/pixels-egress").split() == ["lock"]  # no temporary files left
    finally:
        in_sandbox(box, f"kill -- -{holder}", check=False)
    ok(egress(ansible, deny=[far]))
    assert far not in nft_set(box, "cidr4") and not reaches(box, far) and reaches(box, web1)
    assert in_sandbox(box, "stat -c '%U %a' /run/pixels-egress; ls -A /run/pixels-egress").split() == ["root", "700", "lock"]


def test_dhcp_goes_only_to_the_network_server(ansible, box, world):
    """Port 67 of a helper (the internet) is refused, inside the sandbox and on the host, while
    the sandbox's own DHCP (the bridge's server) keeps its lease."""
    web1, _web2 = web_names()
    for helper in (WEB2, FAR):
        in_sandbox(helper, f"systemctl is-active --quiet eg-dhcp || systemd-run --unit eg-dhcp python3 -c \"{UDP_ECHO_67}\"")
    probe = f"python3 -c \"{DHCP_PROBE}\""
    ok(egress(ansible, mode="unrestricted"))
    # the controls, from ports of their own (a reply would make a later probe's flow established)
    wait_for(lambda: in_sandbox(box, f"{probe} {world['web2']} 40066").startswith("answered"), what="web2's port 67 (control)")
    assert in_sandbox(box, f"{probe} {world['far']} 40067").startswith("answered")  # routed through the host

    ok(egress(ansible, mode="allowlist", domains=[web1]))
    assert in_sandbox(box, f"{probe} {world['web2']} 68").startswith("no answer")  # the sandbox's layer
    rule = [line for line in in_sandbox(box, "nft list chain inet pixels_egress allowed").splitlines() if "dport 67" in line]
    assert len(rule) == 1 and "ip daddr { " in rule[0] and GATEWAY in rule[0] and "255.255.255.255" in rule[0], rule
    in_sandbox(box, "nft flush ruleset")  # root inside lifts its own layer: the host's refuses
    assert in_sandbox(box, f"{probe} {world['far']} 40068").startswith("no answer")
    assert in_sandbox(box, f"{probe} {world['far']} 68").startswith("no answer")
    ok(egress(ansible))  # the rules back
    assert reaches(box, web1)


def test_survives_restart_restore_and_clone(ansible, box):
    web1, web2 = web_names()
    ok(egress(ansible, mode="allowlist", domains=[web1]))
    ok(ansible.module("pixels_checkpoint", name=BOX, label="eg-restricted"))

    ok(ansible.module("pixels_container", name=BOX, state="restarted"))
    wait_for(lambda: reaches(box, web1), what="web1 after the restart")
    assert not reaches(box, web2)
    assert in_sandbox(box, "systemctl is-active pixels-egress.service").strip() == "active"

    ok(egress(ansible, allow=[web2]))
    assert reaches(box, web2)
    ok(ansible.module("pixels_checkpoint", name=BOX, label="eg-restricted", state="restored"))
    wait_for(lambda: reaches(box, web1), what="web1 after the restore")
    assert not reaches(box, web2)
    info = ok(ansible.module("pixels_egress_info", name=BOX))["policy"]
    assert info["domains"] == [web1] and info["enforced"]

    ok(ansible.module("pixels_container", name="eg-clone", source=f"{BOX}:eg-restricted"))
    wait_for(lambda: reaches("px-eg-clone", web1), what="web1 from the clone")
    assert not reaches("px-eg-clone", web2)
    assert incus_cli("config", "get", "px-eg-clone", "user.pixels.egress").stdout.strip() == "allowlist"
    clone = ok(ansible.module("pixels_egress_info", name="eg-clone"))["policy"]
    assert clone["mode"] == "allowlist" and clone["enforced"]
    assert clone["host_layer"] == "none"  # host rules are keyed by address: the clone needs its own task
    again = ok(egress(ansible, name="eg-clone"))
    assert again["changed"] and again["policy"]["host_layer"] == "nftables"
    assert ok(ansible.module("pixels_egress_info", name="eg-clone"))["policy"]["host_layer"] == "nftables"
    incus_cli("delete", "--force", "px-eg-clone")


def test_modes_both_ways(ansible, box):
    web1, web2 = web_names()
    agent = ok(egress(ansible, mode="agent", allow=[web1]))
    policy = agent["policy"]
    assert policy["mode"] == "agent"  # not allowlist
    assert "api.anthropic.com" in policy["domains"] and "185.199.108.0/22" in policy["cidrs"] and web1 in policy["domains"]
    assert "api.anthropic.com" in policy["unresolved"]  # no internet here: reported, not fatal
    assert any("did not resolve" in w for w in agent.get("warnings", [])), agent
    assert reaches(box, web1) and not reaches(box, web2)
    assert pixel(box, "sudo -n id -u").returncode != 0
    assert ok(egress(ansible, mode="agent", allow=[web1]))["changed"] is False

    free = ok(egress(ansible, mode="unrestricted"))
    assert free["changed"] and free["policy"]["mode"] == "unrestricted" and free["policy"]["host_layer"] == "none"
    assert reaches(box, web1) and reaches(box, web2)
    assert pixel(box, "sudo -n id -u").stdout.strip() == "0"
    assert in_sandbox(box, "nft list tables").strip() == ""
    assert in_sandbox(box, "cat /etc/pixels/egress/mode; cat /etc/sudoers.d/pixel | grep -v '^#'") == \
        "unrestricted\npixel ALL=(ALL) NOPASSWD:ALL\n"
    assert ok(egress(ansible, mode="unrestricted"))["changed"] is False
    assert subprocess.run(["nft", "list", "table", "inet", HOST_TABLE], capture_output=True, check=False).returncode != 0

    back = ok(egress(ansible, mode="allowlist", allow=[web2]))
    assert back["policy"]["domains"] == [web2]  # allowlist from another mode starts empty
    assert reaches(box, web2) and not reaches(box, web1)


def test_refresh_reresolves_and_restores_the_table(ansible, box):
    web1, _web2 = web_names()
    # The sandbox layer alone: host rules follow the addresses of the last task, not the timer.
    ok(egress(ansible, mode="allowlist", domains=[web1, "eg-moving.test"], host_layer="none"))
    far = address(WEB2)
    assert not reaches(box, far)
    # The name now points at web2: the timer's refresh swaps it in.
    in_sandbox(box, f"echo '{far} eg-moving.test' >> /etc/hosts")
    in_sandbox(box, "systemctl start pixels-egress-refresh.service")
    assert reaches(box, far)
    assert far in json.loads(in_sandbox(box, "cat /etc/pixels/egress/state.json"))["resolved"]["eg-moving.test"]
    in_sandbox(box, "sed -i '/eg-moving.test/d' /etc/hosts")

    def refreshed_without_far():
        in_sandbox(box, "/usr/local/sbin/pixels-egress-refresh >/dev/null")  # systemd limits starts to 5 in 10 s
        return far not in json.loads(in_sandbox(box, "cat /etc/pixels/egress/state.json"))["resolved"]["eg-moving.test"]
    # systemd-resolved answers from its copy of /etc/hosts for up to 2 s after it last read it
    wait_for(refreshed_without_far, timeout=20, what="a refresh that no longer resolves eg-moving.test")
    assert not reaches(box, far)
    # root flushing the table: the next refresh (or task) loads it again
    in_sandbox(box, "nft flush ruleset")
    assert ok(ansible.module("pixels_egress_info", name=BOX))["policy"]["enforced"] is False
    in_sandbox(box, "systemctl start pixels-egress-refresh.service")
    assert in_sandbox(box, "nft list table inet pixels_egress >/dev/null && echo loaded").strip() == "loaded"
    assert in_sandbox(box, "systemctl is-active pixels-egress-refresh.timer").strip() == "active"
    # Just after boot resolved can lack its DHCP servers for a moment: the refresh waits for them
    # instead of allowing DNS to no one until the next run.
    refreshed = json.loads(in_sandbox(box, ": > /run/eg-empty; mount --bind /run/eg-empty /run/systemd/resolve/resolv.conf; "
                                           "{ sleep 2; umount /run/systemd/resolve/resolv.conf; } & "
                                           "/usr/local/sbin/pixels-egress-refresh"))
    assert refreshed["resolvers"] == [GATEWAY], refreshed


def test_host_layer_holds_when_root_flushes_the_sandbox_rules(ansible, box, world):
    web1, web2 = web_names()
    # auto: Incus refuses the ACL on this kernel, the host nftables rules take over
    result = ok(egress(ansible, mode="allowlist", domains=[web1], host_layer="auto"))
    assert result["policy"]["host_layer"] == "nftables"
    assert incus_cli("config", "get", box, "user.pixels.egress.host").stdout.startswith("nftables ")
    assert "px-eg-box-egress" not in incus_cli("network", "acl", "list", "--format", "csv").stdout  # the trial left nothing
    host_rules = subprocess.run(["nft", "list", "table", "inet", HOST_TABLE], capture_output=True, text=True, check=False).stdout
    assert f"{address(box)} : jump sb_{PROJECT.replace('-', '_')}__px_eg_box" in host_rules, host_rules

    assert not reaches(box, world["far"])
    in_sandbox(box, "nft flush ruleset")  # root inside lifts its own layer
    # Same bridge: the host sees it only when bridged traffic goes through its netfilter hooks.
    assert reaches(box, web2) == (not bridge_netfilter())
    assert not reaches(box, world["far"])  # routed through the host: the host layer holds

    ok(egress(ansible, allow=[world["far"]]))  # the task loads the sandbox rules again, and the host's
    assert reaches(box, world["far"]) and not reaches(box, web2)

    only = ok(egress(ansible, host_layer="acl"))
    assert only["policy"]["host_layer"] == "none"
    assert any("Only the in-sandbox egress layer" in w and "ACL" in w for w in only.get("warnings", [])), only

    ok(egress(ansible, mode="unrestricted"))
    assert subprocess.run(["nft", "list", "table", "inet", HOST_TABLE], capture_output=True, check=False).returncode != 0
    assert reaches(box, world["far"])


def test_destroy_takes_the_host_rules_along(ansible, world):
    """DHCP hands a deleted sandbox's address to the next one: its host rules must go with it."""
    ok(ansible.module("pixels_container", name="eg-gone"))
    in_sandbox("px-eg-gone", "id pixel >/dev/null 2>&1 || useradd -m -u 1000 -s /bin/bash pixel")
    ok(egress(ansible, name="eg-gone", mode="allowlist", domains=["10.9.0.0/16"]))
    chain = f"sb_{PROJECT.replace('-', '_')}__px_eg_gone"
    listed = subprocess.run(["nft", "list", "table", "inet", HOST_TABLE], capture_output=True, text=True, check=False)
    assert chain in listed.stdout
    ok(ansible.module("pixels_container", name="eg-gone", state="absent"))
    listed = subprocess.run(["nft", "list", "table", "inet", HOST_TABLE], capture_output=True, text=True, check=False)
    assert chain not in listed.stdout


def test_ipv6_is_filtered_like_ipv4(ansible, world):
    """A sandbox on the second bridge, which has IPv6: the helper over IPv6 is refused unless allowed."""
    ok(ansible.module("pixels_container", name="eg-six", state="stopped"))
    incus_cli("config", "device", "override", "px-eg-six", "eth0", f"network={BRIDGE}")
    incus_cli("start", "px-eg-six")
    wait_address("px-eg-six")
    six = "px-eg-six"
    in_sandbox(six, "id pixel >/dev/null 2>&1 || useradd -m -u 1000 -s /bin/bash pixel")
    far4, far6 = world["far"], world["far6"]
    wait_for(lambda: reaches(six, f"[{far6}]", family="-6"), what="the helper over IPv6 (control)")

    ok(egress(ansible, name="eg-six", mode="allowlist", domains=[f"{far4}/32"], host_layer="none"))
    assert reaches(six, far4)
    assert not reaches(six, f"[{far6}]", family="-6")

    ok(egress(ansible, name="eg-six", allow=[far6], host_layer="none"))
    assert reaches(six, f"[{far6}]", family="-6")
    incus_cli("delete", "--force", six)


ROLE_PLAY = """\
- hosts: localhost
  gather_facts: false
  roles:
    - role: homelab.pixels.egress
      vars:
        pixels_egress_name: {box}
        pixels_egress_mode: allowlist
        pixels_egress_domains: [{web1}]
        pixels_egress_host_layer: nftables
        pixels_egress_host_table: {table}
        pixels_egress_refresh_interval: {interval}
"""


def test_role_applies_and_is_idempotent(ansible, box):
    web1, web2 = web_names()
    ok(egress(ansible, mode="unrestricted"))
    play = ROLE_PLAY.format(box=BOX, web1=web1, table=HOST_TABLE, interval=NO_TIMER)
    checked = ansible.playbook(play, check=True)
    assert checked.rc == 0, checked.stdout + checked.stderr
    assert reaches(box, web2)  # check mode changed nothing
    first = ansible.playbook(play)
    assert first.rc == 0 and first.changed >= 1, first.stdout + first.stderr
    assert reaches(box, web1) and not reaches(box, web2)
    second = ansible.playbook(play)
    assert second.rc == 0 and second.changed == 0, second.stdout + second.stderr
    # root inside removed the table: the next run sees it and loads it again
    in_sandbox(box, "nft delete table inet pixels_egress")
    repaired = ansible.playbook(play)
    assert repaired.rc == 0 and repaired.changed >= 1, repaired.stdout + repaired.stderr
    assert in_sandbox(box, "nft list tables").strip() == "table inet pixels_egress"


def test_fails_closed(ansible, world):
    """When the rules cannot be loaded, the task fails and the sandbox stays locked down:
    restricted sudo, no network now, and none at the next boot; a later successful run recovers."""
    web1, _web2 = web_names()
    fc = "px-eg-fc"
    ok(ansible.module("pixels_container", name="eg-fc"))
    wait_ready(fc)
    in_sandbox(fc, "useradd -m -u 1000 -s /bin/bash pixel && mv /usr/sbin/nft /usr/sbin/nft.off")
    assert reaches(fc, web1)

    failed = egress(ansible, name="eg-fc", mode="allowlist", domains=[web1], host_layer="none")
    assert failed.get("failed") and "stays locked down" in failed["msg"], failed
    assert "nft is missing in the sandbox" in failed["msg"], failed
    assert "Traceback" not in json.dumps(failed)
    assert in_sandbox(fc, "cat /etc/pixels/egress/mode") == "allowlist\n"
    assert incus_cli("config", "get", fc, "user.pixels.egress").stdout.strip() == "allowlist"
    assert pixel(fc, "sudo -n id -u").returncode != 0
    assert in_sandbox(fc, "cat /sys/class/net/eth0/operstate").strip() == "down"
    assert not reaches(fc, web1)

    incus_cli("restart", fc)  # no rules at boot: the network does not come up
    wait_booted(fc)
    assert address(fc) is None
    assert in_sandbox(fc, "systemctl is-active pixels-egress.service networking.service", check=False).split() == ["failed", "inactive"]

    in_sandbox(fc, "mv /usr/sbin/nft.off /usr/sbin/nft")
    fixed = ok(egress(ansible, name="eg-fc", mode="allowlist", domains=[web1], host_layer="none"))
    assert fixed["changed"] and fixed["policy"]["unresolved"] == [], fixed
    assert wait_address(fc)
    assert reaches(fc, web1) and not reaches(fc, f"{WEB2}.incus")
    incus_cli("delete", "--force", fc)

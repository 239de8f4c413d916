"""The homelab.pixels.sandboxes inventory against the real Incus, through ansible-inventory."""

import json
import os
import socket
import subprocess
import sys
import uuid

import pytest
import yaml

from ansible_collections.homelab.pixels.plugins.inventory.sandboxes import group_part
from ansible_fixtures import BIN, ROOT
from conftest import PROJECT, SOCKET, incus_cli

PLUGIN = "homelab.pixels.sandboxes"
MINE = {"golden", "web-1", "web-2", "api-1", "evil"}
MARKER = f"/tmp/pwned-{uuid.uuid4().hex[:12]}"
PAYLOADS = {
    "description": f"{{{{ lookup('pipe', 'touch {MARKER}-description') }}}}",
    "egress": f"{{{{ lookup('pipe', 'touch {MARKER}-egress') }}}}",
    "note": f"{{% set x = lookup('pipe', 'touch {MARKER}-note') %}}{{{{ x }}}}",
    # no "{" at all: Ansible reads the first line as other delimiters for the rest
    "header": f"#jinja2:variable_start_string:'[[', variable_end_string:']]'\n"
              f"[[ lookup('pipe', 'touch {MARKER}-header') ]]",
}


def plain(value):
    """ansible-inventory --list marks unsafe strings ({"__ansible_unsafe": "..."}): unwrap them."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class Inventory:
    """Writes a .pixels.yml source and runs ansible-inventory on it."""

    def __init__(self, ansible, directory):
        self.ansible = ansible
        self.directory = directory

    def write(self, config=None, name="test.pixels.yml", **options):
        path = os.path.join(self.directory, name)
        data = {"plugin": PLUGIN, **(config or {}), **options}
        with open(path, "w") as handle:
            yaml.safe_dump(data, handle)
        return path

    def run(self, path, *args, env=None, wrapper=()):
        # Any source that fails to parse fails the command (instead of a warning).
        extra = {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "1", **(env or {})}
        cmd = [*wrapper, os.path.join(BIN, "ansible-inventory"), "-i", path, *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.ansible.env(extra), cwd=ROOT,
                              timeout=300, check=False)

    def list(self, config=None, env=None, args=(), **options):
        proc = self.run(self.write(config, **options), "--list", *args, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        return plain(json.loads(proc.stdout))

    def fail(self, config=None, *needles, env=None, wrapper=(), **options):
        proc = self.run(self.write(config, **options), "--list", env=env, wrapper=wrapper)
        assert proc.returncode != 0, proc.stdout
        for needle in needles:
            assert needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
        return proc.stderr


def members(data, group):
    return set(data.get(group, {}).get("hosts", []))


def hosts(data):
    return set(data["_meta"]["hostvars"])


@pytest.fixture(scope="module")
def sandboxes(ansible, incus, golden):
    """golden (running) and four stopped clones of golden:ready with base/egress metadata."""
    def clone(name, **args):
        result = ansible.module("pixels_container", name=name, source="golden:ready", state="stopped", **args)
        assert not result.get("failed"), result

    try:
        clone("web-1")
        clone("web-2")
        clone("api-1", cpu=2, memory=1024)
        clone("evil")
        # with Incus' API, not through a module: ansible-core before 2.19 would render the template
        # in the module's arguments on the way (as it does any playbook's)
        subprocess.run(["incus", "query", "-X", "PATCH", f"/1.0/instances/px-evil?project={PROJECT}",
                        "-d", json.dumps({"description": PAYLOADS["description"]})],
                       check=True, capture_output=True, timeout=60)
        for name, key, value in (
            ("web-1", "user.pixels.base", "golden"), ("web-1", "user.pixels.egress", "agent"),
            ("web-2", "user.pixels.base", "golden"), ("web-2", "user.pixels.egress", "unrestricted"),
            ("evil", "user.pixels.egress", PAYLOADS["egress"]), ("evil", "user.note", PAYLOADS["note"]),
            ("evil", "user.header", PAYLOADS["header"]),
        ):
            incus_cli("config", "set", f"px-{name}", f"{key}={value}")
        yield MINE
    finally:
        for name in MINE - {"golden"}:
            incus_cli("delete", "--force", f"px-{name}", check=False)


@pytest.fixture
def inventory(ansible, tmp_path):
    return Inventory(ansible, str(tmp_path))


def incus_instance(name):
    return json.loads(incus_cli("list", f"^px-{name}$", "--format", "json").stdout)[0]


# -- output -----------------------------------------------------------------

def test_graph(inventory, sandboxes):
    proc = inventory.run(inventory.write(), "--graph")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    graph = proc.stdout
    assert graph.startswith("@all:")
    for line in ("|--@pixels:", "|--@pixels_running:", "|--@pixels_stopped:", "|--@pixels_base_golden:",
                 "|--@pixels_egress_agent:", "|--@pixels_egress_unrestricted:", "|  |--golden", "|  |--web-1"):
        assert line in graph, graph
    running = graph.split("|--@pixels_running:")[1].split("|--@")[0]
    assert "golden" in running and "web-1" not in running, graph
    assert "px-" not in graph, "hosts are bare sandbox names"


def test_list_host_vars(inventory, sandboxes):
    data = inventory.list()
    assert MINE <= hosts(data)
    golden = data["_meta"]["hostvars"]["golden"]
    raw = incus_instance("golden")
    ipv4 = [a["address"] for a in raw["state"]["network"]["eth0"]["addresses"] if a["family"] == "inet"]
    assert golden["ansible_host"] == ipv4[0] and golden["pixels_ipv4"] == ipv4
    assert golden["ansible_connection"] == "homelab.pixels.incus" and "ansible_user" not in golden
    expected = {
        "pixels_instance": "px-golden",
        "pixels_status": "running",
        "pixels_image": "debian/12",
        "pixels_source": None,
        "pixels_base": None,
        "pixels_egress": None,
        "pixels_cpu": 1,
        "pixels_memory": 512,
        "pixels_checkpoints": ["ready"],
        "pixels_description": "",
        "pixels_project": PROJECT,
        "pixels_incus_project": PROJECT,
        "pixels_incus_socket": SOCKET,
        "pixels_created_at": raw["created_at"],
    }
    assert {k: golden[k] for k in expected} == expected
    assert isinstance(golden["pixels_ipv6"], list) and golden["pixels_metadata"] == {"user.pixels.image": "debian/12"}
    assert not any(k.startswith("pixels_incus_client") for k in golden)

    web = data["_meta"]["hostvars"]["web-1"]
    assert "ansible_host" not in web and web["pixels_ipv4"] == []
    assert (web["pixels_status"], web["pixels_source"], web["pixels_base"], web["pixels_egress"]) == \
        ("stopped", "golden:ready", "golden", "agent")
    assert web["pixels_instance"] == "px-web-1" and web["pixels_checkpoints"] == []
    api = data["_meta"]["hostvars"]["api-1"]
    assert (api["pixels_cpu"], api["pixels_memory"]) == (2, 1024)


def unsafe_markers(value, path=""):
    """Where ansible-inventory's JSON has {"__ansible_unsafe": ...} objects."""
    if isinstance(value, dict):
        if "__ansible_unsafe" in value:
            return [path]
        return [m for k, v in value.items() for m in unsafe_markers(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [m for i, v in enumerate(value) for m in unsafe_markers(v, f"{path}[{i}]")]
    return []


def test_list_and_host_print_plain_values(inventory, sandboxes):
    """What AWX imports: plain values as they are (ansible_host a string); only the sandbox-made
    values that could template are marked (ansible-core 2.19 marks every untrusted string)."""
    path = inventory.write()
    proc = inventory.run(path, "--list")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    hostvars = listing["_meta"]["hostvars"]
    assert all(path.startswith("._meta.hostvars.evil.") for path in unsafe_markers(listing)), unsafe_markers(listing)
    assert MINE <= members(listing, "pixels"), "host names are plain in the groups' lists"
    golden = hostvars["golden"]
    assert isinstance(golden["ansible_host"], str) and golden["ansible_host"] == golden["pixels_ipv4"][0]
    for host in MINE - {"evil"}:
        assert unsafe_markers(hostvars[host]) == [], (host, hostvars[host])
    marked = unsafe_markers(hostvars["evil"])
    expected = {".pixels_description", ".pixels_egress", ".pixels_metadata.user.pixels.egress",
                ".pixels_metadata.user.note", ".pixels_metadata.user.header"}
    assert set(marked) <= expected, marked
    assert hostvars["evil"]["pixels_instance"] == "px-evil" and isinstance(hostvars["evil"]["pixels_status"], str)
    for host in ("golden", "evil"):
        proc = inventory.run(path, "--host", host)
        assert proc.returncode == 0, proc.stderr
        single = json.loads(proc.stdout)
        assert plain(single) == plain(hostvars[host])
        assert unsafe_markers(single) == [] or host == "evil", single
    assert isinstance(json.loads(inventory.run(path, "--host", "golden").stdout)["ansible_host"], str)


def test_every_group_kind(inventory, sandboxes):
    data = inventory.list()
    assert MINE <= members(data, "pixels")
    assert members(data, "pixels_running") & MINE == {"golden"}
    assert members(data, "pixels_stopped") & MINE == MINE - {"golden"}
    assert members(data, "pixels_base_golden") == {"web-1", "web-2"}
    assert members(data, "pixels_egress_agent") == {"web-1"}
    assert members(data, "pixels_egress_unrestricted") == {"web-2"}
    # evil's egress is a template: its group name is sanitized, the value never rendered
    evil_groups = [g for g, v in data.items() if "evil" in v.get("hosts", []) and g.startswith("pixels_egress_")]
    assert evil_groups == ["pixels_egress_" + group_part(PAYLOADS["egress"])], evil_groups
    assert set(evil_groups[0]) <= set("abcdefghijklmnopqrstuvwxyz0123456789_"), evil_groups


def test_ssh_connection(inventory, sandboxes):
    data = inventory.list(connection="ssh")
    golden = data["_meta"]["hostvars"]["golden"]
    assert (golden["ansible_connection"], golden["ansible_user"]) == ("ssh", "pixel")
    assert golden["ansible_host"] == golden["pixels_ipv4"][0]
    assert inventory.list(connection="ssh", ssh_user="dev")["_meta"]["hostvars"]["web-1"]["ansible_user"] == "dev"


def test_constructed(inventory, sandboxes):
    data = inventory.list(
        compose={"mem_gib": "pixels_memory // 1024", "shout": "pixels_status | upper",
                 "ansible_host": "'override-' ~ inventory_hostname"},
        groups={"clones": "pixels_source is not none", "has_ready": "'ready' in pixels_checkpoints",
                "big": "mem_gib | int >= 1"},
        keyed_groups=[
            {"key": "pixels_status", "prefix": "st"},
            {"key": "pixels_checkpoints", "prefix": "cp"},
            {"key": "pixels_base", "prefix": "b", "default_value": "none"},
        ],
        strict=True,
    )
    hostvars = data["_meta"]["hostvars"]
    assert (hostvars["api-1"]["mem_gib"], hostvars["web-1"]["mem_gib"]) == (1, 0)
    assert hostvars["golden"]["shout"] == "RUNNING"
    assert hostvars["web-1"]["ansible_host"] == "override-web-1"
    assert members(data, "clones") == MINE - {"golden"}
    assert members(data, "has_ready") == {"golden"}
    assert members(data, "big") == {"api-1"}
    assert members(data, "st_running") & MINE == {"golden"}
    assert members(data, "st_stopped") & MINE == MINE - {"golden"}
    assert members(data, "cp_ready") == {"golden"}
    assert members(data, "b_golden") == {"web-1", "web-2"}
    assert members(data, "b_none") & MINE == {"golden", "api-1", "evil"}


def test_constructed_strict(inventory, sandboxes):
    broken = {"compose": {"oops": "pixels_nope.deeper"}}
    assert "oops" not in inventory.list(broken)["_meta"]["hostvars"]["golden"]
    inventory.fail(dict(broken, strict=True), "Could not set oops for host")


@pytest.mark.parametrize("options, expected", [
    ({"status": ["running"]}, {"golden"}),
    ({"status": ["stopped"]}, MINE - {"golden"}),
    ({"status": ["running", "stopped"]}, MINE),
    ({"names": ["web-*"]}, {"web-1", "web-2"}),
    ({"names": ["web-?", "api-*"], "exclude_names": ["web-2"]}, {"web-1", "api-1"}),
    ({"names": ["web-*", "golden"], "status": ["stopped"]}, {"web-1", "web-2"}),
    ({"exclude_names": ["*"]}, set()),
])
def test_filters(inventory, sandboxes, options, expected):
    data = inventory.list(options)
    assert hosts(data) & MINE == expected
    assert members(data, "pixels") & MINE == expected
    for group in ("pixels", "pixels_running", "pixels_stopped"):
        assert group in data["all"]["children"], "these groups always exist"


# -- settings ---------------------------------------------------------------

def test_settings_precedence(inventory, sandboxes, tmp_path):
    """Inventory file > PIXELS_* > config.toml > default."""
    toml = tmp_path / "config.toml"
    toml.write_text(f'[incus]\nproject = "{PROJECT}"\nsocket = "{SOCKET}"\n')
    unset = {"PIXELS_INCUS_PROJECT": "", "PIXELS_INCUS_SOCKET": ""}
    assert MINE <= hosts(inventory.list(config_file=str(toml), env=unset))
    # the environment beats config.toml
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('[incus]\nproject = "no-such-project"\n')
    assert MINE <= hosts(inventory.list(config_file=str(bad_toml)))
    inventory.fail({"config_file": str(bad_toml)}, "project='no-such-project' does not exist", env=unset)
    # the file beats the environment
    assert MINE <= hosts(inventory.list(project=PROJECT, env={"PIXELS_INCUS_PROJECT": "no-such-project"}))
    inventory.fail({}, "project='no-such-project' does not exist", env={"PIXELS_INCUS_PROJECT": "no-such-project"})
    # $XDG_CONFIG_HOME/pixels/config.toml when nothing else is set
    xdg = tmp_path / "xdg"
    (xdg / "pixels").mkdir(parents=True)
    (xdg / "pixels" / "config.toml").write_text(toml.read_text())
    assert MINE <= hosts(inventory.list(env=dict(unset, XDG_CONFIG_HOME=str(xdg))))


# -- cache ------------------------------------------------------------------

def test_cache_hit_makes_no_request(inventory, sandboxes, tmp_path):
    """With the cache on, the second run reads nothing from Incus: its socket is gone."""
    link = tmp_path / "incus.socket"
    link.symlink_to(SOCKET)
    cache_dir = tmp_path / "cache"
    config = {"socket": str(link), "cache": True, "cache_plugin": "ansible.builtin.jsonfile",
              "cache_connection": str(cache_dir), "cache_timeout": 600}
    first = inventory.list(config)
    assert MINE <= hosts(first) and len(os.listdir(cache_dir)) == 1
    link.unlink()
    second = inventory.list(config)
    assert second == first
    # groups, filters and constructed features are rebuilt from the cached payload
    third = inventory.list(dict(config, status=["stopped"], keyed_groups=[{"key": "pixels_status", "prefix": "s"}]))
    assert hosts(third) & MINE == MINE - {"golden"} and members(third, "s_stopped") & MINE == MINE - {"golden"}
    # --flush-cache reads Incus again, which is no longer there
    proc = inventory.run(inventory.write(config), "--list", "--flush-cache")
    assert proc.returncode != 0 and "does not exist" in proc.stderr, proc.stderr


def test_cache_is_per_project(inventory, sandboxes, tmp_path):
    """Another project (from the environment) does not get this project's cached sandboxes."""
    config = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "c")}
    assert MINE <= hosts(inventory.list(config))
    inventory.fail(config, "project='no-such-project' does not exist", env={"PIXELS_INCUS_PROJECT": "no-such-project"})


def test_cache_sees_changes_after_flush(inventory, sandboxes, ansible, tmp_path):
    config = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "c"),
              "names": ["late"]}
    assert hosts(inventory.list(config)) == set()
    result = ansible.module("pixels_container", name="late", source="golden:ready", state="stopped")
    assert not result.get("failed"), result
    try:
        assert hosts(inventory.list(config)) == set(), "still cached"
        assert hosts(inventory.list(config, args=("--flush-cache",))) == {"late"}
    finally:
        incus_cli("delete", "--force", "px-late", check=False)


# -- with the connection plugin ------------------------------------------------

def test_playbook_through_the_inventory_and_the_incus_connection(inventory, sandboxes, ansible):
    """The host vars are all homelab.pixels.incus needs: instance, socket and project."""
    path = inventory.write(status=["running"], names=["golden"])
    run = ansible.playbook("""
        - hosts: pixels_running
          gather_facts: false
          tasks:
            - name: marker
              ansible.builtin.raw: cat /root/marker
        """, inventory=path)
    assert run.rc == 0 and not run.failed, run.stdout + run.stderr
    assert run.result("marker", "golden")["stdout"].strip() == "ready"


# -- injection --------------------------------------------------------------

PLAY = """
- hosts: evil
  gather_facts: false
  vars:
    ansible_connection: local
    ansible_python_interpreter: {python}
  tasks:
    - name: var
      ansible.builtin.debug:
        var: pixels_description
    - name: msg
      ansible.builtin.debug:
        msg: "{{{{ pixels_description }}}}|{{{{ pixels_egress }}}}|{{{{ pixels_metadata['user.note'] }}}}|{{{{ pixels_metadata['user.header'] }}}}"
    - name: set_fact
      ansible.builtin.set_fact:
        copied: "{{{{ hostvars[inventory_hostname].pixels_description }}}}"
    - name: copied
      ansible.builtin.debug:
        msg: "{{{{ copied }}}}"
    - name: header
      ansible.builtin.debug:
        msg: "{{{{ pixels_metadata['user.header'] }}}}"
    - name: template
      ansible.builtin.copy:
        content: "{{{{ pixels_metadata['user.note'] }}}}"
        dest: {dest}
"""


def assert_not_pwned():
    leftovers = [p for p in os.listdir("/tmp") if p.startswith(os.path.basename(MARKER))]
    assert not leftovers, f"a template from the API was rendered: {leftovers}"


@pytest.mark.parametrize("cached", [False, True], ids=["live", "cached"])
def test_api_values_are_never_templated(inventory, sandboxes, ansible, tmp_path, cached):
    config = {}
    if cached:
        config = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "c")}
        inventory.list(config)  # fills the cache; the playbook below reads from it
    path = inventory.write(config)
    for args in (("--list",), ("--graph", "--vars"), ("--host", "evil")):
        proc = inventory.run(path, *args)
        assert proc.returncode == 0, proc.stderr
        assert PAYLOADS["description"] in proc.stdout or args[0] == "--graph"
    assert_not_pwned()

    dest = tmp_path / "out.txt"
    run = ansible.playbook(PLAY.format(python=sys.executable, dest=dest), inventory=path)
    assert run.rc == 0 and not run.failed, run.stdout + run.stderr
    assert run.result("var", "evil")["pixels_description"] == PAYLOADS["description"]
    assert run.result("msg", "evil")["msg"] == "|".join(PAYLOADS.values())
    assert run.result("copied", "evil")["msg"] == PAYLOADS["description"]
    assert run.result("header", "evil")["msg"] == PAYLOADS["header"]
    assert dest.read_text() == PAYLOADS["note"]
    assert_not_pwned()


# -- bad input --------------------------------------------------------------

def test_bad_certificates(inventory, incus, tls_server):
    remote = {"remote": tls_server["url"], "client_cert": tls_server["client_cert"],
              "client_key": tls_server["client_key"]}
    inventory.fail(dict(remote, server_cert=tls_server["other_cert"]),
                   "did not present the certificate in server_cert", tls_server["other_cert"])
    inventory.fail(remote, f"TLS verification of {tls_server['url']} failed", "server_cert")
    inventory.fail(dict(remote, client_cert=str(tls_server["dir"] / "missing.crt")),
                   "client_cert=", "missing.crt", "does not exist")
    inventory.fail({"remote": tls_server["url"]}, "needs a trusted client certificate")
    inventory.fail({"remote": "http://127.0.0.1:8443"}, "must be an https:// URL")


def test_bad_sockets(inventory, incus, tmp_path):
    inventory.fail({"socket": "/nonexistent/unix.socket"}, "/nonexistent/unix.socket does not exist",
                   "PIXELS_INCUS_SOCKET")
    plain_file = tmp_path / "plain"
    plain_file.write_text("")
    inventory.fail({"socket": str(plain_file)}, "is not a unix socket")
    dead = str(tmp_path / "dead.socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(dead)
    sock.close()
    inventory.fail({"socket": dead}, "Nothing answers", "Incus daemon running")
    inventory.fail({}, "/env/unix.socket does not exist", env={"PIXELS_INCUS_SOCKET": "/env/unix.socket"})


def test_socket_without_permission(inventory, incus, tmp_path):
    """As in test_bad_input: root without the capabilities that ignore file modes."""
    path = str(tmp_path / "locked.socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen()
    os.chmod(path, 0)
    try:
        inventory.fail({"socket": path}, "No permission to use the Incus socket", "incus-admin",
                       wrapper=["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"])
    finally:
        sock.close()


def test_bad_config_files(inventory, incus, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[incus\n")
    inventory.fail({"config_file": str(broken)}, str(broken), "not valid TOML")
    inventory.fail({"config_file": str(tmp_path / "none.toml")}, "config_file", "does not exist")
    table = tmp_path / "table.toml"
    table.write_text('incus = "x"\n')
    inventory.fail({"config_file": str(table)}, "'incus' must be a table")
    xdg = tmp_path / "xdg"
    (xdg / "pixels").mkdir(parents=True)
    (xdg / "pixels" / "config.toml").write_text("[incus]\nvalidate_certs = 'maybe'\n")
    inventory.fail({}, "validate_certs from", "must be true or false", env={"XDG_CONFIG_HOME": str(xdg)})


@pytest.mark.parametrize("options, needles, env", [
    ({"connection": "telnet"}, ["Invalid value 'telnet'", "connection", "homelab.pixels.incus, ssh"], {}),
    ({"status": ["sideways"]}, ["Invalid value", "status", "running, stopped, frozen, error"], {}),
    ({"validate_certs": "maybe"}, ["validate_certs from the inventory source must be true or false"], {}),
    ({"project": "no-such-project"}, ["project='no-such-project' does not exist", "incus project create"], {}),
    ({}, ["PIXELS_INCUS_VALIDATE_CERTS", "must be true or false"], {"PIXELS_INCUS_VALIDATE_CERTS": "maybe"}),
    ({"keyed_groups": [{"key": "pixels_status", "default_value": "x", "trailing_separator": False}]},
     ["mutually exclusive"], {}),
])
def test_bad_options(inventory, sandboxes, options, needles, env):
    inventory.fail(options, *needles, env=env)


def test_not_our_file(inventory, incus):
    proc = inventory.run(inventory.write(name="plain.yml"), "--list")
    assert proc.returncode != 0 and "could not be verified by inventory plugin" in proc.stderr, proc.stderr


# -- requests ---------------------------------------------------------------

def test_all_stopped_listing_matches_the_full_one(incus_admin, tmp_path):
    """When every sandbox is stopped the reader skips Incus' state; the result is the same."""
    from ansible_collections.homelab.pixels.plugins.module_utils.incus_api import (
        UnixSocketReader,
        sandboxes_from_listing,
    )

    project = f"{PROJECT}-stopped"
    cli = ["incus", "--project", project]
    if not incus_admin.projects.exists(project):
        incus_admin.projects.create(project, config={"features.images": "false", "features.profiles": "false"})
    try:
        subprocess.run([*cli, "init", "debian/12", "px-cold", "-c", "limits.cpu=1"], check=True, capture_output=True)
        for label in ("one", "two", "a-three"):
            subprocess.run([*cli, "snapshot", "create", "px-cold", label], check=True, capture_output=True)
        subprocess.run([*cli, "copy", "px-cold/two", "px-copy"], check=True, capture_output=True)
        subprocess.run([*cli, "init", "debian/12", "not-a-sandbox"], check=True, capture_output=True)
        reader = UnixSocketReader(SOCKET, project)
        cheap = sorted((s.as_dict() for s in reader.list_sandboxes()), key=lambda s: s["name"])
        full = sorted((s.as_dict() for s in sandboxes_from_listing(reader.get("/1.0/instances", {"recursion": 2}))),
                      key=lambda s: s["name"])
        assert cheap == full
        assert [(s["name"], s["checkpoints"]) for s in cheap] == [("cold", ["one", "two", "a-three"]), ("copy", [])]
    finally:
        for name in ("px-cold", "px-copy", "not-a-sandbox"):
            subprocess.run([*cli, "delete", "--force", name], capture_output=True, check=False)
        subprocess.run(["incus", "project", "delete", project], capture_output=True, check=False)

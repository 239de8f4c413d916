"""Pure logic of the homelab.pixels.sandboxes inventory: groups, filters, host vars."""

import pytest

from ansible_collections.homelab.pixels.plugins.inventory.sandboxes import (
    InventoryModule,
    connection_vars,
    group_part,
    host_vars,
    sandbox_groups,
    sandbox_vars,
    selected,
    valid_payload,
)

try:  # ansible-core >= 2.19: strings are untrusted unless tagged
    from ansible.template import is_trusted_as_template, trust_as_template
except ImportError:  # 2.17, 2.18: unsafe strings are AnsibleUnsafe
    is_trusted_as_template = trust_as_template = None
from ansible.utils.unsafe_proxy import AnsibleUnsafe

from ansible_collections.homelab.pixels.plugins.plugin_utils.template_safety import could_template, template_safe

PAYLOAD = "{{ lookup('pipe', 'touch /tmp/pwned') }}"
LOCAL = {"socket": "/var/lib/incus/unix.socket", "remote": None, "client_cert": None, "client_key": None,
         "server_cert": None, "project": "agents", "validate_certs": True}
REMOTE = dict(LOCAL, remote="https://incus.lan:8443", client_cert="/c/client.crt", client_key="/c/client.key",
              server_cert="/c/server.crt", validate_certs=True)


def sandbox(name="box", status="running", ipv4=("10.0.0.5",), metadata=None, **extra):
    data = {
        "name": name, "instance": "px-" + name, "status": status, "ipv4": list(ipv4), "ipv6": ["fd00::5"],
        "image": "debian/12", "source": None, "cpu": 2, "memory": 2048,
        "created_at": "2026-01-01T00:00:00Z", "description": "a box", "checkpoints": ["ready"],
        "metadata": {"user.pixels.image": "debian/12", **(metadata or {})},
    }
    data.update(extra)
    return data


def trusted(value):
    return trust_as_template(value) if trust_as_template else value


def is_unsafe(value):
    if trust_as_template:
        return not is_trusted_as_template(value)
    return isinstance(value, AnsibleUnsafe)


@pytest.mark.parametrize("value, part", [
    ("python", "python"), ("debian/12", "debian_12"), ("web-1.x", "web_1_x"), ("Ünï", "_n_"),
    ("{{ x }}", "___x___"), (12, "12"),
])
def test_group_part(value, part):
    assert group_part(value) == part


def test_groups_of_a_plain_sandbox():
    assert sandbox_groups(sandbox()) == ["pixels", "pixels_running"]
    assert sandbox_groups(sandbox(status="stopped")) == ["pixels", "pixels_stopped"]
    assert sandbox_groups(sandbox(status=None)) == ["pixels", "pixels_unknown"]


def test_groups_by_base_and_egress():
    box = sandbox(metadata={"user.pixels.base": "base-py", "user.pixels.egress": "agent"})
    assert sandbox_groups(box) == ["pixels", "pixels_running", "pixels_base_base_py", "pixels_egress_agent"]
    box = sandbox(status="frozen", metadata={"user.pixels.base": "", "user.pixels.egress": "allow list"})
    assert sandbox_groups(box) == ["pixels", "pixels_frozen", "pixels_egress_allow_list"]


@pytest.mark.parametrize("filters, expected", [
    ({}, ["api-1", "web-1", "web-2", "web-old"]),
    ({"status": ["running"]}, ["web-1", "web-old"]),
    ({"status": ["running", "stopped"]}, ["api-1", "web-1", "web-2", "web-old"]),
    ({"status": ["frozen"]}, []),
    ({"names": ["web-*"]}, ["web-1", "web-2", "web-old"]),
    ({"names": ["web-?"]}, ["web-1", "web-2"]),
    ({"names": ["api-*", "web-2"]}, ["api-1", "web-2"]),
    ({"names": ["WEB-*"]}, []),  # case-sensitive, as Incus names are
    ({"exclude_names": ["*-old"]}, ["api-1", "web-1", "web-2"]),
    ({"names": ["web-*"], "exclude_names": ["*-old", "web-2"], "status": ["running"]}, ["web-1"]),
])
def test_filters(filters, expected):
    boxes = [sandbox("api-1", "stopped"), sandbox("web-1"), sandbox("web-2", "stopped"), sandbox("web-old")]
    assert [b["name"] for b in boxes if selected(b, **filters)] == expected


def test_connection_vars_local_default():
    assert connection_vars(LOCAL) == {
        "ansible_connection": "homelab.pixels.incus",
        "pixels_incus_project": "agents",
        "pixels_incus_socket": "/var/lib/incus/unix.socket",
    }


def test_connection_vars_ssh():
    hostvars = connection_vars(LOCAL, connection="ssh", ssh_user="dev")
    assert hostvars["ansible_connection"] == "ssh" and hostvars["ansible_user"] == "dev"
    assert "ansible_user" not in connection_vars(LOCAL)


def test_connection_vars_remote_has_paths_only():
    hostvars = connection_vars(REMOTE)
    assert hostvars == {
        "ansible_connection": "homelab.pixels.incus",
        "pixels_incus_project": "agents",
        "pixels_incus_remote": "https://incus.lan:8443",
        "pixels_incus_client_cert": "/c/client.crt",
        "pixels_incus_client_key": "/c/client.key",
        "pixels_incus_server_cert": "/c/server.crt",
        "pixels_incus_validate_certs": True,
    }
    assert connection_vars(dict(REMOTE, validate_certs=False, server_cert=None)) == {
        "ansible_connection": "homelab.pixels.incus",
        "pixels_incus_project": "agents",
        "pixels_incus_remote": "https://incus.lan:8443",
        "pixels_incus_client_cert": "/c/client.crt",
        "pixels_incus_client_key": "/c/client.key",
        "pixels_incus_validate_certs": False,
    }


def test_sandbox_vars():
    box = sandbox(metadata={"user.pixels.base": "base", "user.pixels.egress": "agent"}, source="base:ready")
    assert sandbox_vars(box, "agents") == {
        "ansible_host": "10.0.0.5",
        "pixels_instance": "px-box",
        "pixels_status": "running",
        "pixels_ipv4": ["10.0.0.5"],
        "pixels_ipv6": ["fd00::5"],
        "pixels_image": "debian/12",
        "pixels_source": "base:ready",
        "pixels_base": "base",
        "pixels_cpu": 2,
        "pixels_memory": 2048,
        "pixels_created_at": "2026-01-01T00:00:00Z",
        "pixels_checkpoints": ["ready"],
        "pixels_egress": "agent",
        "pixels_description": "a box",
        "pixels_metadata": {"user.pixels.image": "debian/12", "user.pixels.base": "base",
                            "user.pixels.egress": "agent"},
        "pixels_project": "agents",
    }


def test_sandbox_vars_without_address_or_metadata():
    hostvars = sandbox_vars(sandbox(status="stopped", ipv4=(), metadata=None, description=None), None)
    assert "ansible_host" not in hostvars
    assert hostvars["pixels_base"] is None and hostvars["pixels_egress"] is None
    assert hostvars["pixels_description"] == "" and hostvars["pixels_project"] == "default"


def test_host_vars_combines_connection_and_facts():
    hostvars = host_vars(sandbox(), LOCAL, connection="ssh", ssh_user="pixel")
    assert hostvars["ansible_connection"] == "ssh" and hostvars["ansible_user"] == "pixel"
    assert hostvars["ansible_host"] == "10.0.0.5" and hostvars["pixels_instance"] == "px-box"
    assert hostvars["pixels_incus_socket"] == LOCAL["socket"]


HEADER = "#jinja2:variable_start_string:'[[', variable_end_string:']]'\n[[ lookup('pipe', 'touch /tmp/pwned') ]]"


def test_what_could_template_from_the_api_is_unsafe():
    """Even strings that arrive trusted (say from a cache) leave untrusted; keys too."""
    box = sandbox(
        description=trusted(PAYLOAD),
        image=trusted(PAYLOAD),
        checkpoints=[trusted(PAYLOAD), "ready"],
        metadata={trusted("user.pixels.base"): trusted(PAYLOAD), "user.x": trusted(HEADER),
                  trusted("user.{{ k }}"): "plain", "user.pct": "100%"},
    )
    hostvars = sandbox_vars(box, "default")
    for value in (hostvars["pixels_description"], hostvars["pixels_image"], hostvars["pixels_checkpoints"][0],
                  hostvars["pixels_base"], hostvars["pixels_metadata"]["user.x"],
                  hostvars["pixels_metadata"]["user.pct"]):
        assert is_unsafe(value), value
    assert [k for k in hostvars["pixels_metadata"] if is_unsafe(k)] == ["user.{{ k }}"]
    assert not is_unsafe(hostvars["pixels_checkpoints"][1])


def test_plain_values_stay_plain():
    """What cannot template is a plain (trusted) string: ansible-inventory --list prints it as it is."""
    hostvars = host_vars(sandbox(description="web box: ports 80, 443 (nginx) @ rack-2"), LOCAL)
    for key in ("ansible_host", "ansible_connection", "pixels_instance", "pixels_status", "pixels_image",
                "pixels_description", "pixels_created_at", "pixels_project", "pixels_incus_socket",
                "pixels_incus_project"):
        assert not is_unsafe(hostvars[key]), key
    assert not is_unsafe(hostvars["pixels_ipv4"][0]) and not is_unsafe(hostvars["pixels_checkpoints"][0])
    assert all(not is_unsafe(k) and not is_unsafe(v) for k, v in hostvars["pixels_metadata"].items())
    assert (hostvars["pixels_cpu"], hostvars["pixels_memory"], hostvars["pixels_source"]) == (2, 2048, None)


@pytest.mark.parametrize("text, templatable", [
    ("10.123.0.58", False), ("debian/12", False), ("2026-01-01T00:00:00Z", False), ("", False),
    ("a box: ports 80, 443 (nginx) @ rack-2; ~/x [y] <z> 'q' \"q\" | & * $HOME", False),
    ("{{ x }}", True), ("{% if x %}", True), ("{# c #}", True), ("}}", True), ("100%", True),
    ("#jinja2:variable_start_string:'[['\n[[ x ]]", True), ("issue #12", True),
])
def test_could_template(text, templatable):
    assert could_template(text) is templatable


def test_template_safe_keeps_structure():
    value = {"a": [1, 2.5, True, None, "x", "{{ y }}"], "b": {"c": {"d"}}, "{{ k }}": ("t",)}
    safe = template_safe(value)
    assert safe == {"a": [1, 2.5, True, None, "x", "{{ y }}"], "b": {"c": {"d"}}, "{{ k }}": ["t"]}
    assert is_unsafe(safe["a"][5]) and not is_unsafe(safe["a"][4]) and is_unsafe(next(k for k in safe if "{" in k))


@pytest.mark.parametrize("data, ok", [
    ([], True),
    ([sandbox()], True),
    ([{"name": "x"}], False),
    ({"name": "x", "instance": "px-x"}, False),
    (None, False),
    (["px-x"], False),
])
def test_valid_payload(data, ok):
    assert valid_payload(data) is ok


@pytest.mark.parametrize("path, ok", [
    ("inv.pixels.yml", True), ("inv.pixels.yaml", True), ("pixels.yml", True), ("pixels.yaml", True),
    ("inv.yml", False), ("mypixels.yml", False), ("inv.pixels.yml.bak", False), ("missing.pixels.yml", False),
])
def test_verify_file(tmp_path, path, ok):
    for name in ("inv.pixels.yml", "inv.pixels.yaml", "pixels.yml", "pixels.yaml", "inv.yml", "mypixels.yml",
                 "inv.pixels.yml.bak"):
        (tmp_path / name).write_text("plugin: homelab.pixels.sandboxes\n")
    assert InventoryModule().verify_file(str(tmp_path / path)) is ok

"""The provision role's branches for images with a uid-1000 user, such as ubuntu/24.04 (`ubuntu`),
which cannot be fetched on the CI machines (the integration tests run on debian/12 and give it such
a user by hand). The role's own variables and conditions, rendered by Ansible's templating engine
with the getent facts each image has: pure logic, no sandbox."""

import os

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "provision")


def trusted(value):
    """Role files are trusted templates, as Ansible treats them."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [trusted(item) for item in value]
    if isinstance(value, dict):
        return {key: trusted(item) for key, item in value.items()}
    return value


def load(path):
    with open(os.path.join(ROLE, path)) as handle:
        return trusted(yaml.safe_load(handle))


TASKS = {task["name"]: task for task in load("tasks/user.yml")}
RENAME_USER = TASKS["Rename the image's uid-1000 user to pixel"]
RENAME_GROUP = TASKS["Rename the image's gid-1000 group to pixel"]
REFUSE = TASKS["Refuse a sandbox with both a pixel user and another uid-1000 user"]

# ansible.builtin.getent's facts: name -> the other fields of /etc/passwd and /etc/group.
ROOT_USER = {"root": ["x", "0", "0", "root", "/root", "/bin/bash"]}
ROOT_GROUP = {"root": ["x", "0", ""]}
# ubuntu/24.04 from images.linuxcontainers.org: user and group ubuntu (1000), in adm, sudo, lxd...
UBUNTU_USER = dict(ROOT_USER, ubuntu=["x", "1000", "1000", "Ubuntu", "/home/ubuntu", "/bin/bash"])
UBUNTU_GROUP = dict(ROOT_GROUP, ubuntu=["x", "1000", ""], adm=["x", "4", "syslog,ubuntu"], sudo=["x", "27", "ubuntu"])
PIXEL_USER = dict(ROOT_USER, pixel=["x", "1000", "1000", "", "/home/pixel", "/bin/bash"])
PIXEL_GROUP = dict(ROOT_GROUP, pixel=["x", "1000", ""])


def templar(passwd, group):
    variables = dict(load("vars/main.yml"), ansible_facts={"getent_passwd": passwd, "getent_group": group})
    return Templar(loader=DataLoader(), variables=variables)


def runs(task, engine):
    conditions = task["when"] if isinstance(task["when"], list) else [task["when"]]
    return all(engine.evaluate_conditional(condition) for condition in conditions)


def test_ubuntu_user_and_group_become_pixel_keeping_the_home():
    engine = templar(UBUNTU_USER, UBUNTU_GROUP)
    assert engine.template(trust_as_template("{{ provision__uid_owner }} {{ provision__gid_owner }}")) == "ubuntu ubuntu"
    assert engine.evaluate_conditional(REFUSE["ansible.builtin.assert"]["that"])
    assert runs(RENAME_USER, engine) and runs(RENAME_GROUP, engine)
    assert engine.template(RENAME_USER["ansible.builtin.command"]["argv"]) == \
        ["usermod", "--login", "pixel", "--home", "/home/pixel", "--move-home", "ubuntu"]
    assert engine.template(RENAME_GROUP["ansible.builtin.command"]["argv"]) == ["groupmod", "--new-name", "pixel", "ubuntu"]


@pytest.mark.parametrize("passwd, group", [
    (ROOT_USER, ROOT_GROUP),    # debian/12 as `make host` builds it: nobody has 1000
    (PIXEL_USER, PIXEL_GROUP),  # the second run, after the rename
])
def test_nothing_to_rename(passwd, group):
    engine = templar(passwd, group)
    assert engine.evaluate_conditional(REFUSE["ansible.builtin.assert"]["that"])
    assert not runs(RENAME_USER, engine) and not runs(RENAME_GROUP, engine)


def test_ubuntu_next_to_an_existing_pixel_is_refused():
    passwd = dict(UBUNTU_USER, pixel=["x", "1001", "1001", "", "/home/pixel", "/bin/bash"])
    engine = templar(passwd, UBUNTU_GROUP)
    assert not engine.evaluate_conditional(REFUSE["ansible.builtin.assert"]["that"])
    assert "userdel -r ubuntu" in engine.template(REFUSE["ansible.builtin.assert"]["fail_msg"])


def test_group_1000_of_another_name_is_renamed_only_when_pixel_has_none():
    engine = templar(UBUNTU_USER, dict(UBUNTU_GROUP, pixel=["x", "1001", ""]))
    assert runs(RENAME_USER, engine) and not runs(RENAME_GROUP, engine)

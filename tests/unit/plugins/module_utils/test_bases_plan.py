"""The site plan: validation of bases and sandboxes, and the build order (pure logic)."""

import os

import pytest
import yaml

from ansible_collections.homelab.pixels.plugins.module_utils.backend import Checkpoint, Sandbox
from ansible_collections.homelab.pixels.plugins.module_utils.bases import (
    base_instance,
    base_of,
    newest_checkpoint,
    plan,
)
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
BUILTIN = yaml.safe_load(open(f"{ROOT}/roles/site/vars/main.yml"))["pixels_site__builtin_bases"]


def refused(*args, **kwargs):
    with pytest.raises(PixelsError) as err:
        plan(*args, **kwargs)
    return err.value.message


def names(result):
    return [b["name"] for b in result["bases"]]


def test_builtin_bases_are_dev_python_node():
    assert {b["name"]: b.get("from") for b in BUILTIN} == {"dev": None, "python": "dev", "node": "dev"}


def test_chain_is_built_parents_first():
    bases = [{"name": "b", "from": "a"}, {"name": "c", "from": "b"}, {"name": "a", "image": "debian/12"}]
    result = plan(bases, [{"name": "box", "base": "c"}])
    assert names(result) == ["a", "b", "c"]
    assert result["bases"][0]["instance"] == "px-base-a"
    assert result["bases"][1]["from"] == "a"
    assert result["sandboxes"][0]["base_pending"] is True


def test_built_bases_are_not_built_again():
    bases = [{"name": "a", "image": "debian/12"}, {"name": "b", "from": "a"}]
    assert names(plan(bases, [], existing={"a": 1, "b": 2})) == []
    # b missing: only b, from the built a
    assert names(plan(bases, [], existing={"a": 1})) == ["b"]
    # a half-made container (no checkpoint) is replaced
    result = plan(bases, [], existing={"a": 0, "b": 1})
    assert names(result) == ["a"] and result["bases"][0]["recreate"] is True


def test_rebuild_does_not_rebuild_children():
    bases = [{"name": "a", "image": "debian/12"}, {"name": "b", "from": "a"}]
    assert names(plan(bases, [], existing={"a": 1, "b": 1}, rebuild=["a"])) == ["a"]
    assert names(plan([{"name": "a", "image": "x", "rebuild": True}], [], existing={"a": 1})) == ["a"]


def test_builtin_bases_only_when_used():
    assert names(plan([], [], builtin_bases=BUILTIN, base_image="debian/12")) == []
    result = plan([], [{"name": "box", "base": "node"}], builtin_bases=BUILTIN, base_image="debian/12")
    assert names(result) == ["dev", "node"]
    assert result["bases"][0]["image"] == "debian/12"
    assert result["bases"][1]["setup"].endswith("/tasks/bases/node.yml")


def test_declared_base_replaces_builtin():
    result = plan([{"name": "dev", "image": "debian/12"}], [{"name": "box", "base": "python"}],
                  builtin_bases=BUILTIN, base_image="ubuntu/24.04")
    assert names(result) == ["dev", "python"]
    assert result["bases"][0]["builtin"] is False and result["bases"][0]["image"] == "debian/12"


def test_needed_builds_only_what_is_used():
    bases = [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]
    assert names(plan(bases, [], build="needed")) == []
    assert names(plan(bases, [], build="needed", wanted=["b"])) == ["b"]


def test_undeclared_base_built_on_incus_is_used():
    result = plan([], [{"name": "box", "base": "old"}], existing={"old": 1})
    assert names(result) == [] and result["sandboxes"][0]["base"] == "old"


def test_cycle_is_named():
    message = refused([{"name": "a", "from": "b"}, {"name": "b", "from": "c"}, {"name": "c", "from": "a"}], [])
    assert "cycle" in message and "a -> b -> c -> a" in message


def test_self_parent_is_a_cycle():
    assert "a -> a" in refused([{"name": "a", "from": "a"}], [])


def test_unknown_parent():
    message = refused([{"name": "a", "from": "nope"}], [], builtin_bases=BUILTIN)
    assert "pixels_bases[0] (a)" in message and "'nope'" in message and "dev, node, python" in message


def test_image_and_from_together():
    message = refused([{"name": "a", "image": "debian/12", "from": "dev"}], [], builtin_bases=BUILTIN)
    assert "either image or from" in message and "pixels_bases[0] (a)" in message


def test_neither_image_nor_from():
    assert "set image" in refused([{"name": "a"}], [])


def test_setup_and_script_together(tmp_path):
    (tmp_path / "s.yml").write_text("[]")
    (tmp_path / "s.sh").write_text("true")
    message = refused([{"name": "a", "image": "x", "setup": "s.yml", "script": "s.sh"}], [], directory=str(tmp_path))
    assert "setup" in message and "script" in message


def test_missing_setup_file_is_named(tmp_path):
    message = refused([{"name": "a", "image": "x", "setup": "nope.yml"}], [], directory=str(tmp_path))
    assert f"{tmp_path}/nope.yml" in message and "pixels_bases[0] (a).setup" in message


def test_relative_setup_is_resolved(tmp_path):
    (tmp_path / "s.yml").write_text("[]")
    result = plan([{"name": "a", "image": "x", "setup": "s.yml"}], [], directory=str(tmp_path))
    assert result["bases"][0]["setup"] == f"{tmp_path}/s.yml"


def test_unknown_key_is_named():
    message = refused([], [{"name": "box", "cpus": 2}])
    assert "pixels_sandboxes[0] (box): unknown key 'cpus'" in message and "cpu" in message
    message = refused([{"name": "a", "image": "x", "steup": "x.yml"}], [])
    assert "unknown key 'steup'" in message


@pytest.mark.parametrize("key, value, expected", [
    ("cpu", "two", "an integer"),
    ("cpu", True, "an integer"),
    ("memory", 1.5, "an integer"),
    ("provision", "yes", "a boolean (true/false) or a dict"),
    ("egress", "agent", "a dict"),
    ("name", 5, "a string"),
])
def test_wrong_type_is_named(key, value, expected):
    entry = {"name": "box", key: value}
    message = refused([], [entry])
    assert f".{key} must be {expected}" in message


def test_nested_keys_are_checked():
    message = refused([], [{"name": "box", "egress": {"mode": "open"}, "provision": {"ssh_key": []},
                            "devtools": {"tools": "claude"}}])
    assert "egress.mode: 'open'" in message
    assert "provision: unknown key 'ssh_key'" in message
    assert "devtools.tools must be a dict" in message  # name -> version, as pixels_devtools_tools


def test_missing_base_is_named():
    message = refused([], [{"name": "box", "base": "nope"}], builtin_bases=BUILTIN)
    assert "pixels_sandboxes[0] (box).base: base 'nope' is missing" in message


def test_absent_sandbox_needs_no_base():
    result = plan([], [{"name": "box", "base": "gone", "state": "absent"}])
    assert result["sandboxes"][0]["state"] == "absent"


def test_one_origin_only_and_state_checked():
    message = refused([], [{"name": "box", "image": "x", "source": "a:b", "state": "running"}])
    assert "only one of base, image and source" in message and "'running' is not one of" in message


def test_duplicates_and_reserved_names():
    assert "declared twice" in refused([], [{"name": "a"}, {"name": "a"}])
    assert "kept for bases" in refused([], [{"name": "base-x"}])
    assert "declared twice" in refused([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}], [])
    assert "not a valid sandbox name" in refused([], [{"name": "my_box"}])


def test_not_a_list_or_dict():
    assert "pixels_sandboxes must be a list" in refused([], {"name": "box"})
    assert "pixels_sandboxes[0] must be a dict" in refused([], ["box"])


def test_every_problem_is_reported_at_once():
    message = refused([{"name": "a", "from": "zz"}], [{"name": "box", "cpus": 1}, {"name": "b2", "base": "q"}])
    assert "'zz'" in message and "'cpus'" in message and "'q' is missing" in message


def test_defaults_and_waves():
    result = plan([], [{"name": "a"}, {"name": "b", "source": "a:ready", "provision": False,
                                       "devtools": {"installer": "npm"}},
                       {"name": "c", "source": "elsewhere"}])
    a, b, c = result["sandboxes"]
    assert a["state"] == "started" and a["provision"] == {} and a["devtools"] == {} and a["wave"] == 1
    assert b["wave"] == 2 and b["provision"] is None and b["devtools"] == {"installer": "npm"}
    assert c["wave"] == 1


def test_sandbox_names_in_messages_follow_the_var():
    assert "create[0] (box)" in refused([], [{"name": "box", "cpus": 1}], sandboxes_var="create")


class FakeBackend:
    """Only what newest_checkpoint reads (pure logic over its answers)."""

    def __init__(self, sandboxes, checkpoints):
        self.sandboxes, self.checkpoints = sandboxes, checkpoints

    def get_sandbox(self, instance):
        return self.sandboxes.get(instance)

    def list_checkpoints(self, instance):
        return self.checkpoints.get(instance, [])


def test_newest_checkpoint_and_its_errors():
    box = Sandbox(instance="px-base-dev", status="stopped", metadata={"user.pixels.base": "dev"})
    backend = FakeBackend({"px-base-dev": box},
                          {"px-base-dev": [Checkpoint("new", "2026-02-01T00:00:00Z"), Checkpoint("old", "2026-01-01T00:00:00Z")]})
    assert newest_checkpoint(backend, "dev") == ("px-base-dev", "new")
    with pytest.raises(PixelsError, match="not built.*base_build -e name=nope"):
        newest_checkpoint(backend, "nope")
    backend.checkpoints = {}
    with pytest.raises(PixelsError, match="no checkpoint.*rebuild=true"):
        newest_checkpoint(backend, "dev")


def test_base_of():
    assert base_instance("dev") == "px-base-dev"
    assert base_of(Sandbox(instance="px-base-dev", status="stopped", metadata={"user.pixels.base": "dev"})) == "dev"
    # a sandbox cloned from dev carries the key, but is not the base
    assert base_of(Sandbox(instance="px-box", status="running", metadata={"user.pixels.base": "dev"})) is None


@pytest.mark.parametrize("name", ["my_base", "x" * 56, "dev-"])
def test_bad_base_names_name_the_option_and_the_limit(name):
    with pytest.raises(PixelsError) as caught:
        base_instance(name)
    assert caught.value.message.startswith(f"name={name!r} is not a valid base name")
    assert "55 characters" in caught.value.message and "px-base-<name>" in caught.value.message
    assert base_instance("x" * 55) == "px-base-" + "x" * 55
    assert f"pixels_bases[0] ({name}).name={name!r} is not a valid base name" in refused([{"name": name, "image": "i"}], [])


def test_newest_checkpoint_names_the_option_it_came_from():
    with pytest.raises(PixelsError, match="^from='nope': the base is not built"):
        newest_checkpoint(FakeBackend({}, {}), "nope", "from")

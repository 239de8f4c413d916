import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.homelab.pixels.plugins.filter.split_env import FilterModule, split_env


def test_three_forms():
    env = {
        "EDITOR": "vim",
        "WORKERS": 4,
        "DEBUG": False,
        "LANG": {"value": "C.UTF-8"},
        "PLAIN": {"value": "x y", "session_only": False},
        "GITHUB_TOKEN": {"forward": True},
        "AWS_PROFILE": {"forward": True},
        "OPENAI_API_KEY": {"value": "sk-123", "session_only": True},
    }
    assert split_env(env) == {
        "image": {"EDITOR": "vim", "WORKERS": "4", "DEBUG": "false", "LANG": "C.UTF-8", "PLAIN": "x y"},
        "forward": ["AWS_PROFILE", "GITHUB_TOKEN"],
        "session": {"OPENAI_API_KEY": "sk-123"},
    }


@pytest.mark.parametrize("env", [None, {}])
def test_empty(env):
    assert split_env(env) == {"image": {}, "forward": [], "session": {}}


def test_registered():
    assert FilterModule().filters()["split_env"] is split_env


@pytest.mark.parametrize("env, needles", [
    ("A=1", ["pixels_env must be a dictionary", "str"]),
    ({"1BAD": "x"}, ["'1BAD' is not a valid environment variable name"]),
    ({"A-B": "x"}, ["'A-B' is not a valid"]),
    ({"A": None}, ["pixels_env.A has no value", "forward: true"]),
    ({"A": ["x"]}, ["pixels_env.A is a list"]),
    ({"A": "x\ny"}, ["pixels_env.A contains a line break"]),
    ({"A": {"value": "x\0"}}, ["pixels_env.A contains a line break or NUL"]),
    ({"A": {"forward": False}}, ["pixels_env.A: forward", "must be true"]),
    ({"A": {"forward": True, "value": "x"}}, ["pixels_env.A: forward takes no value"]),
    ({"A": {"forward": True, "session_only": True}}, ["pixels_env.A: forward takes no value"]),
    ({"A": {"session_only": True}}, ["pixels_env.A has no value"]),
    ({"A": {"value": "x", "session_only": "yes"}}, ["pixels_env.A.session_only must be true or false"]),
    ({"A": {"value": "x", "secret": True}}, ["pixels_env.A has unknown key(s) secret"]),
    ({"A": {"value": {"nested": 1}}}, ["pixels_env.A is a dict"]),
])
def test_bad_input(env, needles):
    with pytest.raises(AnsibleFilterError) as err:
        split_env(env)
    for needle in needles:
        assert needle in str(err.value)

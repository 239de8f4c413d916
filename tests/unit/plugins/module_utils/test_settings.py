import pytest

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.settings import default_config_file, resolve

CONFIG = """
[incus]
socket = "/from/toml.sock"
project = "toml-project"

[defaults]
image = "debian/12"
cpu = "4"
memory = 1024
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return str(path)


def test_task_beats_env_beats_toml_beats_default(config):
    env = {"PIXELS_INCUS_SOCKET": "/from/env.sock"}
    names = ("socket", "project", "image", "cpu", "memory", "image_server")
    values = resolve({"socket": None, "project": "task-project"}, names, environ=env, config_file=config)
    assert values == {
        "socket": "/from/env.sock",
        "project": "task-project",
        "image": "debian/12",
        "cpu": 4,
        "memory": 1024,
        "image_server": "https://images.linuxcontainers.org",
    }
    values = resolve({"socket": "/task.sock"}, ("socket",), environ=env, config_file=config)
    assert values["socket"] == "/task.sock"


def test_defaults_without_any_config(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    values = resolve({}, ("socket", "project", "validate_certs", "memory"), environ=env)
    assert values == {"socket": "/var/lib/incus/unix.socket", "project": "default",
                      "validate_certs": True, "memory": 2048}


def test_default_config_file_follows_xdg(tmp_path):
    assert default_config_file({"XDG_CONFIG_HOME": "/x"}) == "/x/pixels/config.toml"
    (tmp_path / "pixels").mkdir()
    (tmp_path / "pixels" / "config.toml").write_text('[defaults]\nimage = "xdg/1"\n')
    assert resolve({}, ("image",), environ={"XDG_CONFIG_HOME": str(tmp_path)})["image"] == "xdg/1"


def test_pixels_config_env_names_the_file(config):
    assert resolve({}, ("project",), environ={"PIXELS_CONFIG": config})["project"] == "toml-project"


@pytest.mark.parametrize("raw, expected", [("false", False), ("0", False), ("yes", True), ("True", True)])
def test_bool_from_env(raw, expected, tmp_path):
    env = {"PIXELS_INCUS_VALIDATE_CERTS": raw, "XDG_CONFIG_HOME": str(tmp_path)}
    assert resolve({}, ("validate_certs",), environ=env)["validate_certs"] is expected


def test_bad_env_value_names_the_variable(tmp_path):
    env = {"PIXELS_DEFAULT_MEMORY": "lots", "XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(PixelsError) as err:
        resolve({}, ("memory",), environ=env)
    assert "PIXELS_DEFAULT_MEMORY" in err.value.message and "whole number" in err.value.message


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[incus\nsocket = 1\n")
    with pytest.raises(PixelsError) as err:
        resolve({}, ("socket",), environ={}, config_file=str(path))
    assert str(path) in err.value.message and "TOML" in err.value.message


def test_bad_toml_type_names_the_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[defaults]\nmemory = true\n")
    with pytest.raises(PixelsError) as err:
        resolve({}, ("memory",), environ={}, config_file=str(path))
    assert "[defaults] memory" in err.value.message


def test_section_must_be_a_table(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('incus = "oops"\n')
    with pytest.raises(PixelsError) as err:
        resolve({}, ("socket",), environ={}, config_file=str(path))
    assert "[incus]" in err.value.message


def test_explicit_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(PixelsError) as err:
        resolve({}, ("socket",), environ={}, config_file=str(tmp_path / "nope.toml"))
    assert "config_file" in err.value.message


def test_empty_env_value_is_ignored(tmp_path):
    env = {"PIXELS_INCUS_PROJECT": "  ", "XDG_CONFIG_HOME": str(tmp_path)}
    assert resolve({}, ("project",), environ=env)["project"] == "default"


def test_origin_of_params_in_messages(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(PixelsError) as err:
        resolve({"validate_certs": "maybe"}, ("validate_certs",), environ=env, origin="the inventory source")
    assert err.value.message == "validate_certs from the inventory source must be true or false, not 'maybe'."
    with pytest.raises(PixelsError, match="from the task option"):
        resolve({"validate_certs": "maybe"}, ("validate_certs",), environ=env)

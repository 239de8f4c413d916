import pytest

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.names import (
    check_label,
    default_label,
    instance_name,
    parse_source,
    sandbox_name,
)


@pytest.mark.parametrize("name, expected", [
    ("mybox", "px-mybox"),
    ("px-mybox", "px-mybox"),
    ("a", "px-a"),
    ("Box-2", "px-Box-2"),
    ("x" * 60, "px-" + "x" * 60),
])
def test_instance_name_adds_prefix(name, expected):
    assert instance_name(name) == expected
    assert sandbox_name(expected) == expected[3:]


@pytest.mark.parametrize("name", ["", "my_box", "box-", "my box", "x" * 61, "a.b", "px-", "-box", "bö"])
def test_instance_name_rejects_invalid(name):
    with pytest.raises(PixelsError) as err:
        instance_name(name)
    assert "name" in err.value.message


def test_instance_name_rejects_non_string():
    with pytest.raises(PixelsError):
        instance_name(None)


@pytest.mark.parametrize("label", ["ready", "px-20261122-101010", "v1.2_final", "0"])
def test_label_valid(label):
    assert check_label(label) == label


@pytest.mark.parametrize("label", ["", "with space", "a/b", ".hidden", "x" * 64, "-x"])
def test_label_invalid(label):
    with pytest.raises(PixelsError) as err:
        check_label(label)
    assert "label" in err.value.message


def test_default_label_format():
    assert default_label(0) == "px-19700101-000000"


@pytest.mark.parametrize("source, expected", [
    ("box", ("px-box", None)),
    ("box:ready", ("px-box", "ready")),
    ("px-box:ready", ("px-box", "ready")),
])
def test_parse_source(source, expected):
    assert parse_source(source) == expected


@pytest.mark.parametrize("source", ["box:", ":ready", "a:b:c", "bad_name:x", "box:bad label", ""])
def test_parse_source_rejects(source):
    with pytest.raises(PixelsError) as err:
        parse_source(source)
    assert "source" in err.value.message

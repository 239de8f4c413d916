import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.homelab.pixels.plugins.filter.devtools_plan import FilterModule, devtools_plan

CATALOG = {
    "node": {"mise": "node", "npm": ""},
    "claude": {"mise": "npm:@anthropic-ai/claude-code", "npm": "@anthropic-ai/claude-code"},
    "codex": {"mise": "npm:@openai/codex", "npm": "@openai/codex"},
}


def test_node_first_then_by_name():
    plan = devtools_plan({"codex": "0.1.0", "claude": "latest", "node": "lts"}, CATALOG, "mise")
    assert [p["name"] for p in plan] == ["node", "claude", "codex"]
    assert plan[0] == {"name": "node", "step": "node", "mise": "node", "npm": "", "version": "lts", "node": True}
    assert plan[2]["version"] == "0.1.0" and plan[2]["npm"] == "@openai/codex"


def test_backends_given_directly():
    plan = devtools_plan({"npm:prettier": 3, "pipx:ruff": None}, CATALOG, "mise")
    assert plan == [
        {"name": "npm:prettier", "step": "npm_prettier", "mise": "npm:prettier", "npm": "prettier", "version": "3",
         "node": False},
        {"name": "pipx:ruff", "step": "pipx_ruff", "mise": "pipx:ruff", "npm": "", "version": "latest", "node": False},
    ]


def test_registered():
    assert FilterModule().filters()["devtools_plan"] is devtools_plan


@pytest.mark.parametrize("tools, installer, needles", [
    ({"cluade": "latest"}, "npm", ["unknown tool 'cluade'", "Known: claude, codex, node", "pixels_devtools_catalog"]),
    ({"pipx:ruff": "latest"}, "npm", ["pixels_devtools_tools.pipx:ruff", "only install npm packages"]),
    ({"claude": "1.0; rm -rf /"}, "mise", ["is not a version"]),
    ({"claude": "latest"}, "apt", ["pixels_devtools_installer='apt'", "mise or npm"]),
    (["claude"], "mise", ["must be a dictionary"]),
])
def test_bad_input(tools, installer, needles):
    with pytest.raises(AnsibleFilterError) as err:
        devtools_plan(tools, CATALOG, installer)
    for needle in needles:
        assert needle in str(err.value)

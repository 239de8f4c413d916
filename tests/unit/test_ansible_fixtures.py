"""The test fixtures' own promise: a run whose result cannot be read never counts as unchanged."""

import subprocess

import pytest

from ansible_fixtures import AnsibleRunner


def parse(stdout, rc=0):
    return AnsibleRunner._parse(subprocess.CompletedProcess([], rc, stdout, ""))  # pylint: disable=protected-access


@pytest.mark.parametrize("stdout", ["", "ERROR! the playbook could not be read", "{not json"])
def test_a_run_without_a_result_fails_the_idempotence_check(stdout):
    run = parse(stdout)
    with pytest.raises(AssertionError, match="printed no result"):
        assert run.changed == 0
    with pytest.raises(AssertionError, match="printed no result"):
        assert run.failed == 0


def test_a_run_with_a_result_counts():
    run = parse('{"plays": [], "stats": {"localhost": {"changed": 2, "failures": 0, "unreachable": 1}}}')
    assert run.changed == 2 and run.failed == 1

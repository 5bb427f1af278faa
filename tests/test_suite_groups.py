"""`make test` runs two pytest-xdist workers with --dist loadgroup: the groups conftest.py gives must reach xdist."""
import pytest


def test_tests_carry_their_xdist_group(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("only under pytest -n N --dist loadgroup (make test)")
    # xdist appends "@group" to the node id; without it, every test is its own group and the tests sharing a
    # costly session fixture build it once per worker (pytest 9.2 + pytest-xdist 3.8 silently did that).
    assert request.node.nodeid.endswith("@test_suite_groups.py"), request.node.nodeid

"""The IPR state table: every cell, and random action sequences."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alma_mcp.errors import InvalidTransition
from alma_mcp.ipr.states import FINAL, TRANSITIONS, Action, IPRState, allowed_actions, next_state

EXPECTED = {
    ("open", "approve"): "approved",
    ("open", "request_changes"): "changes_requested",
    ("open", "reject"): "rejected",
    ("open", "revise"): "open",
    ("open", "close"): "closed",
    ("changes_requested", "revise"): "open",
    ("changes_requested", "reject"): "rejected",
    ("changes_requested", "close"): "closed",
    ("approved", "deploy"): "deploying",
    ("approved", "close"): "closed",
    ("deploying", "succeed"): "deployed",
    ("deploying", "fail"): "failed",
    ("deployed", "deploy"): "deploying",
    ("deployed", "rollback"): "rolling_back",
    ("failed", "deploy"): "deploying",
    ("failed", "rollback"): "rolling_back",
    ("rolling_back", "succeed"): "rolled_back",
    ("rolling_back", "fail"): "failed",
    ("rolled_back", "close"): "closed",
}


@pytest.mark.parametrize(("state", "action"), list(itertools.product(IPRState, Action)))
def test_every_cell_of_the_table(state: IPRState, action: Action) -> None:
    key = (state.value, action.value)
    if key in EXPECTED:
        assert next_state(state, action).value == EXPECTED[key]
    else:
        with pytest.raises(InvalidTransition) as info:
            next_state(state, action)
        assert info.value.code == "ipr.invalid_transition"
        assert info.value.data["allowed"] == [a.value for a in allowed_actions(state)]


def test_the_table_is_exactly_the_documented_one() -> None:
    assert {(s.value, a.value): t.value for (s, a), t in TRANSITIONS.items()} == EXPECTED


def test_the_message_names_the_state_and_what_is_allowed() -> None:
    with pytest.raises(InvalidTransition) as info:
        next_state(IPRState.DEPLOYED, Action.APPROVE)
    assert str(info.value) == (
        "[ipr.invalid_transition] cannot approve an IPR that is 'deployed'; allowed from 'deployed': deploy, rollback"
    )
    with pytest.raises(InvalidTransition) as final:
        next_state(IPRState.REJECTED, Action.CLOSE)
    assert final.value.message.endswith("allowed from 'rejected': none (it is final)")


@settings(derandomize=True, max_examples=300)
@given(st.lists(st.sampled_from(list(Action)), max_size=30))
def test_random_sequences_follow_the_table_and_final_states_absorb(actions: list[Action]) -> None:
    state = IPRState.OPEN
    for action in actions:
        expected = TRANSITIONS.get((state, action))
        if expected is None:
            with pytest.raises(InvalidTransition):
                next_state(state, action)
            continue
        assert state not in FINAL
        state = next_state(state, action)
    if state in FINAL:
        assert allowed_actions(state) == []

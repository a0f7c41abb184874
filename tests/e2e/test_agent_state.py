"""The step as a pipeline: the gate's `Outcome` values, the serializable `RunState`, resuming
a run from a dump in a new Agent, and the caller's `Policy` left alone.

FormEnv (tests/support/scripted_env.py) is a real Environment with real state; the replay
backend answers with scripted model text.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from glmv_agent.actions import action_from_dict
from glmv_agent.agent import Agent, RunResult
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.dialects.base import Step
from glmv_agent.errors import ConfigError
from glmv_agent.outcome import (
    Denied, Finished, LoopNudge, LoopStopped, Outcome, Proceed, Refused, Stopped,
)
from glmv_agent.policy import Policy
from glmv_agent.run_state import RunState
from glmv_agent.trace import StepRecord, TraceReader

from scripted_env import FormEnv, JsonDialect, answer, click, norm

DONE = answer({"type": "done", "success": True, "message": "all good"})
NO_LABEL = answer({"type": "click", "target": {"element": 4}})  # refused: no element list
# The scripted episode: a parse retry, a refusal (its note pending into the next step), three
# clicks on a dead button (the third is a loop nudge), a secret typed, then done.
EPISODE = [
    click("plus"), "garbage", NO_LABEL, click("dead"), click("dead"), click("dead"),
    click("name"), answer({"type": "type", "text": "hi {{pin}}"}), click("plus"), DONE,
]
TASK = "press plus, then type hi and the pin 4711 into the name field"
SECRETS = {"pin": "4711"}


def agent_for(responses: list[str], env: FormEnv, **kw: Any) -> Agent:
    kw.setdefault("settle_time", 0)
    kw.setdefault("trace", False)
    return Agent(ReplayBackend(responses), env, dialect=JsonDialect("pc"), secrets=SECRETS, **kw)


def comparable(records: list[StepRecord]) -> list[dict[str, Any]]:
    """The step records without what differs between two runs of the same episode."""
    return [r.model_dump(mode="json", exclude={"started_at", "ended_at", "timings"})
            for r in records]


def gate(agent: Agent, env: FormEnv, action: dict[str, Any], **step: Any) -> Outcome:
    """The agent's gate on a real observation of `env`, as one step would run it."""
    observation = env.observe()
    record = StepRecord(index=1, screenshot="step-0001.png")
    return agent._gate(Step(action=action_from_dict(action), **step), observation, record, None)


def point(name: str) -> dict[str, Any]:
    x, y = norm(name)
    return {"point": {"x": x, "y": y}}


def test_the_gate_returns_an_outcome_for_each_result() -> None:
    env = FormEnv()
    agent = agent_for([], env, policy=Policy(allowed_actions={"click", "type"}))
    agent.start("t")

    assert gate(agent, env, {"type": "click", "target": point("plus")}) == Proceed()
    assert gate(agent, env, {"type": "done", "success": True, "message": "ok"}) == Finished(
        status="success", answer="ok")
    assert gate(agent, env, {"type": "done", "success": False, "message": "no"}) == Finished(
        status="infeasible", answer="no")
    assert gate(agent, env, {"type": "answer", "text": "42"}) == Finished(
        status="answered", answer="42")
    assert gate(agent, env, {"type": "take_over", "message": "log in"}) == Stopped(
        detail="the model asked a human to take over, but no on_take_over callback was given",
        answer="log in")
    # Refused by the policy: its note is what the model is told next.
    refused = gate(agent, env, {"type": "scroll", "direction": "down"})
    assert isinstance(refused, Refused) and refused.kind == "refused"
    assert "not allowed by the policy" in refused.detail
    assert refused.note.startswith("Your action 'scroll' was not executed")
    assert agent.state is not None and agent.state.notes == []  # the gate only says so

    # A sensitive action (the model flagged it) nobody can approve: Denied; approved: Proceed.
    flagged = {"type": "click", "target": point("delete"), "sensitive": True}
    denied = gate(agent, env, flagged)
    assert isinstance(denied, Denied) and "no confirm callback" in denied.detail
    approving = agent_for([], env, confirm=lambda action, step: True)
    approving.start("t")
    assert gate(approving, env, flagged) == Proceed()
    refusing = agent_for([], env, confirm=lambda action, step: False)
    refusing.start("t")
    assert gate(refusing, env, flagged) == Denied(
        detail="the user did not allow it (the model flagged this action as sensitive)",
        note="The user did not allow your action 'click' (the model flagged this action as "
             "sensitive). Do not repeat it; find another way or finish the task.")
    dry = agent_for([], env, dry_run=True)
    dry.start("t")
    assert gate(dry, env, flagged) == Proceed()  # a dry run executes nothing: nothing to ask

    # The loop guard: the same action on an unchanged screen, nudged once, then stopped.
    looping = agent_for([], env, loop_limit=2)
    looping.start("t")
    dead = {"type": "click", "target": point("dead")}
    assert gate(looping, env, dead) == Proceed()
    nudge = gate(looping, env, dead)
    assert isinstance(nudge, LoopNudge) and "repeated 2 times" in nudge.detail
    assert "same action (click) 2 times" in nudge.note
    looping._apply(nudge)  # applying the nudge is what arms the stop
    assert isinstance(gate(looping, env, dead), LoopStopped)
    assert LoopStopped().ends().status == "loop"

    agent.stop()
    assert gate(agent, env, {"type": "click", "target": point("plus")}) == Stopped(
        detail="stopped before executing the model's action")


def test_run_state_round_trips_through_json_with_secrets_masked() -> None:
    env = FormEnv()
    agent = agent_for(EPISODE, env)
    agent.start(TASK)
    for _ in range(8):  # up to the typed secret (the loop nudge of step 5 is no history)
        agent.step()
    state = agent.state
    assert state is not None and not state.ended
    dump = state.to_dict()
    text = json.dumps(dump)
    assert "4711" not in text and "***" in text and "{{pin}}" in text
    back = RunState.from_dict(json.loads(text))
    assert back.to_dict() == dump  # nothing lost or changed on the way
    assert back.task == TASK.replace("4711", "***")
    assert [r.outcome for r in back.records] == [r.outcome for r in state.records]
    assert back.failures == state.failures and back.actions == state.actions == 6
    assert (back.loop.key, back.loop.repeats, back.loop.nudged) == (
        state.loop.key, state.loop.repeats, state.loop.nudged)
    assert (back.loop.thumbnail == state.loop.thumbnail).all()
    assert len(back.history) == len(state.history) == 7
    for restored, live in zip(back.history, state.history):
        assert restored.step.action == live.step.action
        assert (restored.observation, restored.executed) == (live.observation, live.executed)
        assert restored.screenshot.tobytes() == live.screenshot.tobytes()

    with pytest.raises(ConfigError, match="not a run state dump"):
        RunState.from_dict({"task": "t"})
    with pytest.raises(ConfigError, match="damaged"):
        RunState.from_dict({**dump, "records": [{"index": "one"}]})


@pytest.mark.parametrize("k", [1, 2, 4, 5, 8])
def test_a_run_resumed_from_a_dump_ends_as_the_uninterrupted_one(k: int, tmp_path: Path) -> None:
    whole_env = FormEnv()
    whole_agent = agent_for(EPISODE, whole_env, trace=True, trace_dir=tmp_path / "whole")
    whole = whole_agent.run(TASK)
    assert whole.status == "success" and whole_env.state.name == "hi 4711"

    env = FormEnv()
    first = agent_for(EPISODE, env, trace=True, trace_dir=tmp_path / "split")
    first.start(TASK)
    for _ in range(k):
        first.step()
    assert first.state is not None
    dump = json.loads(json.dumps(first.state.to_dict()))  # as if written to a file
    used = len(first.backend.messages)
    del first  # the process that ran the first part is gone

    second = agent_for(EPISODE[used:], env, trace=True)  # traces where the dump says
    resumed = second.resume(RunState.from_dict(dump))  # = resume_run

    assert_same_run(resumed, whole)
    assert (env.state.counter, env.state.name, env.executed) == (
        whole_env.state.counter, whole_env.state.name, whole_env.executed)
    # What the model was asked after the resume is what it was asked in the whole run.
    assert second.backend.messages == whole_agent.backend.messages[used:]
    # The resumed steps went on in the trace the dump came from: one complete trace.
    reader = TraceReader(tmp_path / "split")
    assert reader.info.status == "success"
    assert comparable(reader.records()) == comparable(TraceReader(tmp_path / "whole").records())


def assert_same_run(resumed: RunResult, whole: RunResult) -> None:
    assert (resumed.status, resumed.answer, resumed.error) == (
        whole.status, whole.answer, whole.error)
    assert comparable(resumed.steps) == comparable(whole.steps)
    assert [r.outcome for r in whole.steps] == [
        "executed", "refused", "executed", "executed", "loop_nudge", "executed", "executed",
        "executed", "terminal"]


def test_resuming_a_dump_refuses_finished_runs_and_foreign_traces(tmp_path: Path) -> None:
    env = FormEnv()
    agent = agent_for([click("plus"), DONE], env)
    assert agent.run("press plus").status == "success"
    assert agent.state is not None
    with pytest.raises(ConfigError, match="nothing to resume"):
        agent_for([], env).resume_run(agent.state.to_dict())

    # A run stopped from outside goes on from its dump (the stop is one of its steps).
    stopped = agent_for([click("plus"), DONE], env)
    stopped.start("press plus")
    stopped.step()
    stopped.stop()
    assert stopped.step().outcome == "stopped"
    assert stopped.result is not None and stopped.result.status == "stopped"
    assert stopped.state is not None
    again = agent_for([DONE], env).resume_run(stopped.state.to_dict())
    assert again.status == "success"
    assert [r.outcome for r in again.steps] == ["executed", "stopped", "terminal"]

    traced = agent_for([click("plus"), click("plus")], env, trace=True, trace_dir=tmp_path / "t")
    traced.start("press plus")
    traced.step()
    dump = copy.deepcopy(traced.state.to_dict())  # type: ignore[union-attr]
    traced.step()  # the trace goes on past the dump
    assert traced.state is not None  # (which waits until the trace has that step on disk)
    later = agent_for([DONE], env, trace=True)
    with pytest.raises(ConfigError, match="holds a trace of 2 steps"):
        later.resume_run(dump)
    # Into a trace directory of its own, the dump resumes (the new trace starts at step 2).
    other = agent_for([DONE], env, trace=True, trace_dir=tmp_path / "other")
    result = other.resume_run(dump)
    assert result.status == "success" and [r.index for r in result.steps] == [1, 2]
    assert [r.index for r in TraceReader(tmp_path / "other").records()] == [2]


def test_the_callers_policy_is_never_changed(tmp_path: Path) -> None:
    policy = Policy(allowed_domains=["shop.example"], allowed_actions={"click", "type"},
                    max_text_length=50)
    before = copy.deepcopy(policy)
    env = FormEnv()
    agent = agent_for([click("plus"), answer({"type": "scroll", "direction": "down"}), DONE],
                      env, policy=policy, allowed_domains=["127.0.0.1:8000"], max_text_length=10)
    assert agent.run("press plus").status == "success"
    assert policy == before
    assert (agent.policy.allowed_domains, agent.policy.max_text_length) == (
        ["127.0.0.1:8000"], 10)
    # The agent's copy shares nothing the caller could see changing (a shallow copy shared
    # the sets, lists and keyword table).
    agent.policy.allowed_actions.discard("type")  # type: ignore[union-attr]
    agent.policy.keywords.clear()
    assert policy == before and policy.allowed_actions == {"click", "type"}


class DialogFormEnv(FormEnv):
    """FormEnv whose page reports a dismissed alert at its third observation (as WebEnv
    reports the dialogs it dismissed)."""

    def _capture(self):  # type: ignore[no-untyped-def]
        observation = super()._capture()
        if self.observe_count == 3:
            observation.extra["dialog"] = {"type": "alert", "message": "Saved!"}
        return observation


def test_notes_wait_for_a_prompt_the_model_answers() -> None:
    """A refusal's note and a page dialog's note are shown in the next prompt the model
    answers, and only there; a model call that fails keeps them, into the dump and the
    resumed run."""
    env = DialogFormEnv()
    first = agent_for([click("plus"), NO_LABEL], env)  # step 3: the backend runs dry
    assert first.run("press plus").status == "error"
    assert first.state is not None
    refusal, dialog = first.state.notes
    assert "label [4] is not on the current screen" in refusal
    assert dialog == ("After your last action the page showed a alert dialog 'Saved!', "
                      "which was dismissed (Cancel).")
    assert refusal not in prompt_text(first.backend.messages[1])  # the refused step's own

    second = agent_for([click("plus"), DONE], env)
    assert second.resume_run(json.loads(json.dumps(first.state.to_dict()))).status == "success"
    shown, after = (prompt_text(m) for m in second.backend.messages)
    assert "Note: " + refusal in shown and "Note: " + dialog in shown
    assert "Note:" not in after
    assert second.state is not None and second.state.notes == []


def prompt_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(p["text"] for m in messages for p in (
        [{"text": m["content"]}] if isinstance(m["content"], str) else m["content"])
        if "text" in p)

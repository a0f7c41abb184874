"""The agent loop end to end: ReplayBackend answers, FormEnv (tests/support/scripted_env.py) acts.

FormEnv is a real Environment with real state; the backend replays scripted answers, which
stands in for a model we cannot run here (9B weights, no GPU).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from glmv_agent.agent import Agent
from glmv_agent.backends.base import Backend
from glmv_agent.backends.replay import ReplayBackend
from glmv_agent.envs.base import Observation
from glmv_agent.errors import ConfigError
from glmv_agent.messages import Message

from scripted_env import FormEnv, JsonDialect, answer, click, norm

DONE = answer({"type": "done", "success": True, "message": "all good"})


def make_agent(responses: list[str], env: FormEnv, tmp_path: Path, **kw) -> Agent:
    kw.setdefault("settle_time", 0)
    return Agent(ReplayBackend(responses), env, dialect=JsonDialect("pc"),
                 trace_dir=tmp_path / "trace", **kw)


def prompt_text(messages: list[Message]) -> str:
    out = []
    for m in messages:
        c = m["content"]
        out += [c] if isinstance(c, str) else [p["text"] for p in c if p.get("type") == "text"]
    return "\n".join(out)


def test_happy_path_hidpi_negative_offset(tmp_path: Path) -> None:
    env = FormEnv(scale=1.5, left=-400, top=-50)
    agent = make_agent([click("plus"), click("plus"), DONE], env, tmp_path)
    result = agent.run("press plus twice")
    assert result.status == "success" and result.answer == "all good"
    assert env.state.counter == 2
    assert [r.outcome for r in result.steps] == ["executed", "executed", "terminal"]
    # Landed on the widget centre in virtual-desktop logical units.
    (x, y), = result.steps[0].env_points
    assert result.steps[0].pixel_points == [(105, 60)]  # 1.5 px per unit: (70, 40) * 1.5
    assert x == pytest.approx(-400 + 70, abs=1) and y == pytest.approx(-50 + 40, abs=1)
    assert (tmp_path / "trace" / "step-0003.png").is_file()
    assert result.trace_dir == str(tmp_path / "trace")
    assert len(result.timings["steps"]) == 3 and result.timings["model"] >= 0
    # The history reached the model: the third prompt lists the two clicks.
    third = prompt_text(agent.backend.messages[2])
    assert third.count('"type": "click"') == 2


def test_parse_retry_then_success(tmp_path: Path) -> None:
    env = FormEnv()
    agent = make_agent(["I think I should click", "still no action", click("plus"), DONE],
                       env, tmp_path)
    result = agent.run("press plus")
    first = result.steps[0]
    assert first.outcome == "executed" and first.retries == 2
    assert [a.response for a in first.attempts] == ["I think I should click", "still no action"]
    assert "ACTION" in first.attempts[0].expected
    # The re-ask carried the bad answer and what was expected.
    retry = agent.backend.messages[1]
    assert retry[-2] == {"role": "assistant", "content": "I think I should click"}
    assert "ACTION {json action}" in prompt_text(retry)
    assert env.state.counter == 1 and result.status == "success"


def test_parse_failure_ends_without_executing(tmp_path: Path) -> None:
    env = FormEnv()
    agent = make_agent(["nope", "nope", "nope", click("plus")], env, tmp_path,
                       max_parse_retries=2)
    result = agent.run("press plus")
    assert result.status == "unparseable" and "unparseable" in (result.error or "")
    assert result.steps[0].outcome == "parse_error" and len(result.steps[0].attempts) == 3
    assert env.executed == [] and agent.backend.remaining == 1


def test_loop_detection_nudges_then_stops(tmp_path: Path) -> None:
    env = FormEnv()
    agent = make_agent([click("dead")] * 5, env, tmp_path, loop_limit=3)
    result = agent.run("do something")
    assert [r.outcome for r in result.steps] == ["executed", "executed", "loop_nudge", "stopped"]
    assert result.status == "loop"
    assert len(env.executed) == 2  # the repeats after the limit were never executed
    assert "same action" in prompt_text(agent.backend.messages[3])
    assert "same action" not in prompt_text(agent.backend.messages[2])


def test_loop_counter_resets_when_screen_changes(tmp_path: Path) -> None:
    env = FormEnv()
    # "plus" changes the screen each time, so repeating it is progress, not a loop.
    agent = make_agent([click("plus")] * 5 + [DONE], env, tmp_path, loop_limit=2)
    assert agent.run("press plus five times").status == "success"
    assert env.state.counter == 5


def test_confirm_deny_then_allow(tmp_path: Path) -> None:
    env = FormEnv()
    asked: list[tuple[str, str | None]] = []
    answers = iter([False, True])

    def confirm(action, step) -> bool:
        asked.append((action.type, step.thinking))
        return next(answers)

    delete = click("delete", think="I will delete all items now")
    agent = make_agent([delete, delete, DONE], env, tmp_path, confirm=confirm)
    result = agent.run("clear the list")
    assert [r.outcome for r in result.steps] == ["denied", "executed", "terminal"]
    assert result.steps[0].sensitive and "deletion" in result.steps[0].sensitive
    assert result.steps[0].confirmed is False and result.steps[1].confirmed is True
    assert len(asked) == 2 and env.state.deleted
    assert "did not allow" in prompt_text(agent.backend.messages[1])


def test_sensitive_action_without_confirm_callback_is_denied(tmp_path: Path) -> None:
    env = FormEnv()
    delete = click("delete", think="I will delete all items now")
    agent = make_agent([delete, DONE], env, tmp_path)  # no confirm callback
    result = agent.run("clear the list")
    assert [r.outcome for r in result.steps] == ["denied", "terminal"]
    assert result.steps[0].confirmed is False
    assert not env.state.deleted and env.executed == []


def test_stop_on_denial_ends_the_run_as_refused(tmp_path: Path) -> None:
    env = FormEnv()
    delete = click("delete", think="I will delete all items now")
    agent = make_agent([delete, DONE], env, tmp_path, stop_on_denial=True)
    result = agent.run("clear the list")
    assert result.status == "refused" and [r.outcome for r in result.steps] == ["denied"]
    assert "no confirm callback" in (result.error or "")
    assert not env.state.deleted and agent.backend.remaining == 1


def test_max_actions_ends_the_run_after_that_many_executed_actions(tmp_path: Path) -> None:
    env = FormEnv()
    scroll = answer({"type": "scroll", "direction": "down"})
    agent = make_agent([scroll, click("plus"), click("plus"), DONE], env, tmp_path,
                       max_actions=2)
    result = agent.run("press plus")
    assert result.status == "success" and result.answer is None
    assert [r.outcome for r in result.steps] == ["executed", "executed"]
    assert env.state.counter == 1 and agent.backend.remaining == 2
    with pytest.raises(ConfigError, match="max_actions"):
        make_agent([], env, tmp_path, max_actions=0)


def web_answer(thought: str, action: str) -> str:
    return f"<think>{thought}</think><answer>Thought: {thought}\nAction: {action}\n" \
           "Memory_Updated: {}</answer>"


class LabelledFormEnv(FormEnv):
    """FormEnv with set-of-marks on, as the web dialects need, but no element labelled."""

    def _capture(self) -> Observation:
        observation = super()._capture()
        observation.elements = []
        return observation


def test_web_history_reports_each_actions_outcome(tmp_path: Path) -> None:
    """The GLM-4.1V web prompt lists Thought, Action and the Observation after it: the
    model is told which action ran and which was refused (it used to read "Success")."""
    from glmv_agent.dialects import get_dialect
    from glmv_agent.trace import TraceReader

    env = LabelledFormEnv()  # no element on screen: a click on label [7] is refused
    answers = [web_answer("Scroll first.", "Scroll [WINDOW]; [down]"),
               web_answer("Click the button.", "Click [7]"),
               web_answer("Done.", "ANSWER; <content>ok</content>")]
    agent = Agent(ReplayBackend(answers), env, dialect=get_dialect("glm-4.1v", "web"),
                  settle_time=0, trace_dir=tmp_path / "trace")
    result = agent.run("look around")
    assert [r.outcome for r in result.steps] == ["executed", "refused", "terminal"]
    last = prompt_text(agent.backend.messages[2])
    assert "0.Thought:Scroll first.\tAction:Scroll [WINDOW]; [down]\tObservation:Success" in last
    assert ("1.Thought:Click the button.\tAction:Click [7]\tObservation:Not executed: "
            "element label [7] is not on the current screen") in last
    # The trace keeps the same history for a resumed run.
    items = TraceReader(tmp_path / "trace").history()
    assert [(i.executed, i.observation.split(":")[0]) for i in items] == \
        [(True, "Success"), (False, "Not executed")]


def test_unexecuted_attempts_stay_out_of_other_prompts(tmp_path: Path) -> None:
    env = FormEnv()
    no_label = answer({"type": "click", "target": {"element": 4}})  # FormEnv has no labels
    agent = make_agent([click("plus"), no_label, DONE], env, tmp_path)
    assert agent.run("press plus").status == "success"
    third = prompt_text(agent.backend.messages[2])
    assert third.count('"type": "click"') == 1  # JsonDialect: executed steps only
    assert "label [4] is not on the current screen" in third  # told as a note instead
    assert [item.executed for item in agent.history] == [True, False]


def test_agent_side_actions_are_recorded_not_executed(tmp_path: Path) -> None:
    from glmv_agent.dialects.autoglm import Note

    env = FormEnv()
    note = answer(Note(message="the price is 12").to_dict())
    agent = make_agent([note, click("plus"), DONE], env, tmp_path)
    result = agent.run("remember the price, then press plus")
    assert [r.outcome for r in result.steps] == ["executed", "executed", "terminal"]
    assert [kind for kind, _ in env.executed] == ["click"]  # the note never reached the env
    assert [h.step.action.type for h in agent.history] == ["note", "click"]


def test_chinese_keywords_and_model_flag_need_confirmation(tmp_path: Path) -> None:
    env = FormEnv()
    asked: list[str] = []
    flagged = answer({"type": "click", "sensitive": True,
                      "target": {"point": dict(zip("xy", norm("plus")))}})
    agent = make_agent([click("delete", think="点击删除按钮"), flagged, DONE], env, tmp_path,
                       confirm=lambda a, s: asked.append(a.type) or False, loop_limit=None)
    result = agent.run("清空列表")
    assert asked == ["click", "click"]
    assert "删除" in (result.steps[0].sensitive or "")
    assert "flagged" in (result.steps[1].sensitive or "")
    assert env.executed == []


def test_secrets_password_field_and_masking(tmp_path: Path, caplog) -> None:
    env = FormEnv()
    confirmed: list[str] = []
    typed = answer({"type": "type", "text": "{{password}}"}, think="type the password")
    agent = make_agent([click("password"), typed, DONE], env, tmp_path,
                       secrets={"password": "hunter2"},
                       confirm=lambda a, s: confirmed.append(a.text) or True)
    with caplog.at_level(logging.INFO, logger="glmv_agent"):
        # The user leaked the secret into the task; it must still never reach the model.
        result = agent.run("log in; the password hunter2 goes in the password field")
    assert result.status == "success"
    assert env.state.password == "hunter2"  # the real value was typed
    assert confirmed == ["{{password}}"]  # the callback sees the placeholder only
    assert result.steps[1].sensitive == "typing into a password field"
    for messages in agent.backend.messages:
        text = prompt_text(messages)
        assert "hunter2" not in text and "***" in text and "{{password}}" in text
    for path in (tmp_path / "trace").iterdir():
        if path.suffix != ".png":
            assert b"hunter2" not in path.read_bytes(), path.name
    assert "hunter2" not in caplog.text and "***" in caplog.text


def test_take_over_calls_back_and_continues(tmp_path: Path) -> None:
    env = FormEnv()
    messages: list[str] = []

    def human(msg: str) -> None:  # the "human" logs in, then hands back
        messages.append(msg)
        env.state.name = "bob"

    agent = make_agent([answer({"type": "take_over", "message": "please log in"}), DONE],
                       env, tmp_path, on_take_over=human)
    result = agent.run("log in")
    assert messages == ["please log in"] and env.state.name == "bob"
    assert [r.outcome for r in result.steps] == ["take_over", "terminal"]
    assert result.status == "success"


def test_take_over_without_callback_stops(tmp_path: Path) -> None:
    agent = make_agent([answer({"type": "take_over", "message": "captcha"})], FormEnv(),
                       tmp_path)
    result = agent.run("log in")
    assert result.status == "stopped" and result.answer == "captcha"


def test_dry_run_records_without_executing(tmp_path: Path) -> None:
    env = FormEnv(scale=2.0)
    agent = make_agent([click("plus"), click("delete", think="delete"), DONE], env, tmp_path,
                       dry_run=True, confirm=lambda a, s: pytest.fail("no confirm in dry run"))
    result = agent.run("look around")
    assert [r.outcome for r in result.steps] == ["dry_run", "dry_run", "terminal"]
    assert env.executed == [] and env.state.counter == 0
    assert result.steps[0].env_points[0] == pytest.approx((70.25, 40.25))


def test_answer_and_infeasible(tmp_path: Path) -> None:
    r = make_agent([answer({"type": "answer", "text": "42"})], FormEnv(), tmp_path).run("q")
    assert (r.status, r.answer) == ("answered", "42")
    r = make_agent([answer({"type": "done", "success": False, "message": "no way"})],
                   FormEnv(), tmp_path / "b").run("q")
    assert (r.status, r.answer) == ("infeasible", "no way")


def test_max_steps(tmp_path: Path) -> None:
    env = FormEnv()
    result = make_agent([click("plus")] * 5, env, tmp_path, max_steps=3).run("press forever")
    assert result.status == "max_steps" and len(result.steps) == 3 and env.state.counter == 3


def test_policy_refusals_end_the_run(tmp_path: Path) -> None:
    env = FormEnv()  # FormEnv has no goto and no element labels
    goto = answer({"type": "goto", "url": "https://example.com"})
    element = answer({"type": "click", "target": {"element": 4}})
    agent = make_agent([goto, element, goto], env, tmp_path, loop_limit=None)
    result = agent.run("browse")
    assert [r.outcome for r in result.steps] == ["refused"] * 3
    assert result.status == "refused" and env.executed == []
    assert "cannot execute 'goto'" in prompt_text(agent.backend.messages[1])
    assert "label [4]" in result.steps[1].detail


def test_action_error_from_env_is_told_to_model(tmp_path: Path) -> None:
    env = FormEnv()
    typed = answer({"type": "type", "text": "bob"})
    agent = make_agent([typed, click("name"), typed, DONE], env, tmp_path)
    result = agent.run("enter name")
    assert [r.outcome for r in result.steps] == ["action_error", "executed", "executed",
                                                 "terminal"]
    assert "click a field first" in prompt_text(agent.backend.messages[1])
    assert env.state.name == "bob"


class BlockingBackend(Backend):
    """A backend whose server never answers (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def complete(self, messages, **params) -> str:
        self.release.wait(30)
        return click("plus")


def test_model_timeout(tmp_path: Path) -> None:
    backend = BlockingBackend()
    agent = Agent(backend, FormEnv(), dialect=JsonDialect("pc"), trace_dir=tmp_path / "t",
                  model_timeout=0.2)
    try:
        result = agent.run("press plus")
    finally:
        backend.release.set()
    assert result.status == "error" and "did not answer within" in (result.error or "")
    assert result.steps[0].outcome == "error"


def test_step_timeout_bounds_the_model_call(tmp_path: Path) -> None:
    backend = BlockingBackend()
    env = FormEnv()
    agent = Agent(backend, env, dialect=JsonDialect("pc"), trace_dir=tmp_path / "t",
                  step_timeout=0.3)
    try:
        result = agent.run("press plus")
    finally:
        backend.release.set()
    assert result.status == "error" and "did not answer within" in (result.error or "")
    assert env.executed == []


def test_stop_from_another_thread_between_steps(tmp_path: Path) -> None:
    env = FormEnv()
    agent = make_agent([click("plus")] * 10, env, tmp_path)
    seen = []
    for record in agent.iter_run("press plus"):
        seen.append(record.outcome)
        if len(seen) == 2:
            t = threading.Thread(target=agent.stop)
            t.start()
            t.join()
    assert agent.result is not None and agent.result.status == "stopped"
    assert seen == ["executed", "executed"] and env.state.counter == 2


def test_pause_then_stop_while_paused(tmp_path: Path) -> None:
    env = FormEnv()
    agent: Agent

    def human(msg: str) -> None:
        agent.pause()
        threading.Thread(target=agent.stop).start()

    agent = make_agent([answer({"type": "take_over"}), click("plus"), DONE], env, tmp_path,
                       on_take_over=human)
    result = agent.run("x")
    assert result.status == "stopped" and env.state.counter == 0


def test_pause_then_resume(tmp_path: Path) -> None:
    env = FormEnv()
    agent: Agent

    def human(msg: str) -> None:
        agent.pause()
        threading.Thread(target=agent.resume).start()

    agent = make_agent([answer({"type": "take_over"}), click("plus"), DONE], env, tmp_path,
                       on_take_over=human)
    result = agent.run("x")
    assert result.status == "success" and env.state.counter == 1


def test_step_by_step_api(tmp_path: Path) -> None:
    env = FormEnv()
    agent = make_agent([click("plus"), DONE], env, tmp_path)
    with pytest.raises(ConfigError, match="start"):
        agent.step()
    agent.start("press plus")
    assert agent.step().outcome == "executed" and not agent.finished
    assert len(agent.history) == 1
    assert agent.step().outcome == "terminal" and agent.finished
    with pytest.raises(ConfigError, match="already ended"):
        agent.step()
    assert agent.result is not None and agent.result.status == "success"


def test_resume_after_backend_failure(tmp_path: Path) -> None:
    env = FormEnv()
    first = make_agent([click("plus"), click("plus")], env, tmp_path)
    result = first.run("press plus three times")
    assert result.status == "error" and "no responses left" in (result.error or "")
    second = Agent(ReplayBackend([click("plus"), DONE]), env, dialect=JsonDialect("pc"),
                   settle_time=0)
    resumed = second.resume_run(tmp_path / "trace")
    assert resumed.status == "success" and env.state.counter == 3
    assert [r.index for r in resumed.steps] == [1, 2, 3, 4, 5]
    # History was rebuilt from the trace: the first resumed prompt lists both old clicks.
    assert prompt_text(second.backend.messages[0]).count('"type": "click"') == 2
    assert second.backend.messages[0][1]["content"][0]["type"] == "image"
    with pytest.raises(ConfigError, match="nothing to resume"):
        second.resume_run(tmp_path / "trace")


def test_resume_restores_pending_notes_and_loop_state(tmp_path: Path) -> None:
    env = FormEnv()
    no_label = answer({"type": "click", "target": {"element": 4}})
    first = make_agent([no_label], env, tmp_path)  # refused, then the backend runs dry
    assert first.run("press plus").status == "error"
    second = Agent(ReplayBackend([click("plus"), DONE]), env, dialect=JsonDialect("pc"),
                   settle_time=0)
    assert second.resume_run(tmp_path / "trace").status == "success"
    # The refusal note the interrupted run never delivered reaches the model now.
    assert "label [4] is not on the current screen" in prompt_text(second.backend.messages[0])
    assert "label [4]" not in prompt_text(second.backend.messages[1])

    env = FormEnv()
    loops = tmp_path / "loops"
    first = Agent(ReplayBackend([click("dead")] * 2), env, dialect=JsonDialect("pc"),
                  settle_time=0, trace_dir=loops, loop_limit=3)
    assert first.run("do something").status == "error"
    second = Agent(ReplayBackend([click("dead"), DONE]), env, dialect=JsonDialect("pc"),
                   settle_time=0, loop_limit=3)
    resumed = second.resume_run(loops)
    # The third identical click on an unchanged screen is caught across the resume.
    assert [r.outcome for r in resumed.steps[2:]] == ["error", "loop_nudge", "terminal"]
    assert len(env.executed) == 2
    assert "same action" in prompt_text(second.backend.messages[1])


def test_bad_configuration(tmp_path: Path) -> None:
    env = FormEnv()
    with pytest.raises(ConfigError, match="model_name"):
        Agent("http://127.0.0.1:9/v1", env, dialect=JsonDialect("pc"))
    with pytest.raises(ConfigError, match="not an http"):
        Agent(str(tmp_path / "missing"), env, dialect=JsonDialect("pc"))
    with pytest.raises(ConfigError, match="unknown Agent option"):
        Agent(ReplayBackend([]), env, dialect=JsonDialect("pc"), temprature=0.1)
    with pytest.raises(ConfigError, match="max_steps"):
        Agent(ReplayBackend([]), env, dialect=JsonDialect("pc"), max_steps=0)
    agent = make_agent([], env, tmp_path)
    with pytest.raises(ConfigError, match="task"):
        agent.run("  ")
    make_agent([DONE], env, tmp_path).run("first")
    with pytest.raises(ConfigError, match="already holds a trace"):
        make_agent([DONE], env, tmp_path).run("second")


def test_generation_params_reach_backend(tmp_path: Path) -> None:
    agent = make_agent([DONE], FormEnv(), tmp_path, temperature=0.1, max_new_tokens=64)
    agent.run("x")
    params = agent.backend.calls[0][1]
    assert params["temperature"] == 0.1 and params["max_new_tokens"] == 64


def test_real_glm41v_pc_dialect(tmp_path: Path) -> None:
    """The loop with the real GLM-4.1V PC prompt and parser (0-1000 point grid), chosen by
    family name from the environment's platform."""
    from glmv_agent.dialects.glm41v import GLM41VDialect

    env = FormEnv(scale=2.0)
    x, y = (round(v * 1000) for v in norm("plus"))
    reply = (f"<think>The plus button is at the top left.</think><answer>Click plus.\n"
             f"left_click(start_box='[{x},{y}]', element_info='plus')\nMemory: []</answer>")
    done = "<think>Done.</think><answer>The task is complete.\nDONE()\nMemory: []</answer>"
    agent = Agent(ReplayBackend(["no action here", reply, reply, done]), env,
                  family="glm-4.1v", settle_time=0, trace_dir=tmp_path / "t")
    assert isinstance(agent.dialect, GLM41VDialect) and agent.dialect.platform == "pc"
    result = agent.run("press plus twice")
    assert result.status == "success" and env.state.counter == 2
    assert result.steps[0].retries == 1
    assert "History actions" in prompt_text(agent.backend.messages[-1])


class InterruptingBackend(Backend):
    """Raises what a user or a broken engine would raise mid-call."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def complete(self, messages, **params) -> str:
        raise self.exc


def test_ctrl_c_and_unexpected_errors_are_traced_then_reraised(tmp_path: Path) -> None:
    from glmv_agent.trace import TraceReader

    agent = Agent(InterruptingBackend(KeyboardInterrupt()), FormEnv(), dialect=JsonDialect("pc"),
                  trace_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        agent.run("x")
    assert agent.result is not None and agent.result.status == "stopped"
    assert TraceReader(tmp_path / "a").info.status == "stopped"
    assert TraceReader(tmp_path / "a").records()[0].outcome == "stopped"

    agent = Agent(InterruptingBackend(RuntimeError("CUDA exploded")), FormEnv(),
                  dialect=JsonDialect("pc"), trace_dir=tmp_path / "b")
    with pytest.raises(RuntimeError):
        agent.run("x")
    assert agent.result.status == "error" and "CUDA exploded" in agent.result.error
    assert TraceReader(tmp_path / "b").records()[0].error == "RuntimeError: CUDA exploded"


def test_checkpoint_directory_runs_the_local_engine(tmp_path: Path, tiny_checkpoint) -> None:
    """A directory as `model` loads the in-process engine. The tiny random checkpoint
    (stand-in for the 9B weights) answers gibberish, so every parse fails and nothing may
    be executed."""
    from glmv_agent.backends.local import LocalBackend

    env = FormEnv()
    agent = Agent(str(tiny_checkpoint), env, dialect=JsonDialect("pc"), max_parse_retries=1,
                  trace_dir=tmp_path / "t", max_new_tokens=4, temperature=0.0)
    assert isinstance(agent.backend, LocalBackend)
    result = agent.run("press plus")
    assert result.status == "unparseable" and env.executed == []
    assert len(result.steps[0].attempts) == 2
    assert all(isinstance(a.response, str) for a in result.steps[0].attempts)


def test_on_text_streams_the_answers(tmp_path: Path) -> None:
    env = FormEnv()
    streamed: list[str] = []
    responses = [click("plus", think="press it"), DONE]
    agent = make_agent(list(responses), env, tmp_path, on_text=streamed.append)
    assert agent.run("press plus").status == "success"
    assert "".join(streamed) == "".join(responses)


def test_step_records_time_every_phase(tmp_path: Path) -> None:
    """Each step's timings name its phases; the model's time to first text and to the end
    of its thinking are known when it streams (on_text); no fixed settle sleep by default."""
    env = FormEnv()
    thinking = "<think>press it</think>" + click("plus")
    agent = Agent(ReplayBackend([thinking, DONE]), env, dialect=JsonDialect("pc"),
                  trace_dir=tmp_path / "trace", on_text=lambda text: None)
    first = agent.run("press plus").steps[0]
    assert set(first.timings) == {"observe", "record", "prompt", "model", "model_ttft",
                                  "model_thinking_end", "parse", "policy", "execute",
                                  "settle", "total"}
    phases = sum(v for k, v in first.timings.items()
                 if k not in ("total", "model_ttft", "model_thinking_end"))
    assert phases <= first.timings["total"]
    assert first.timings["model_ttft"] <= first.timings["model_thinking_end"] \
        <= first.timings["model"]
    assert first.timings["settle"] == 0.0  # FormEnv is ready at once; nothing slept
    from glmv_agent.trace import TraceReader
    assert TraceReader(tmp_path / "trace").records()[0].timings == first.timings

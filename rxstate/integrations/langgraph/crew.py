"""A small multi-agent LangGraph crew on a scripted chat model: the scenario of the LangGraph example,
notebook and benchmark.

A researcher gathers notes, a writer drafts, and a reviewer asks a human (``interrupt``) to approve the
draft or to ask for a revision; an approved draft is published. The model is LangChain's
``FakeListChatModel`` given each agent's scripted reply, so a run needs no network and replays the same
way in every process. ``python -m rxstate.integrations.langgraph.crew resume --url URL --namespace NS
--thread T --answer approve`` resumes an interrupted thread from another process.

Example:
    >>> from rxstate.integrations.langgraph import RxCheckpointSaver
    >>> saver = RxCheckpointSaver(rxstate.connect(fakeredis.FakeRedis()))
    >>> graph, config = build_crew(saver), {"configurable": {"thread_id": "launch"}}
    >>> graph.invoke(start("the launch plan"), config)["__interrupt__"][0].value["question"]
    'approve the draft?'
    >>> graph.invoke(Command(resume="approve"), config)["published"]
    True
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

__all__ = ["SCRIPT", "CrewState", "build_crew", "main", "start"]

SCRIPT: dict[str, list[str]] = {
    "researcher": ["notes: three risks (budget, timeline, staffing) and two mitigations"],
    "writer": [
        "draft v1: ship in two phases; staffing is the main risk",
        "draft v2: ship in two phases; hire two engineers before phase one",
        "draft v3: ship in two phases; hire two engineers; review the budget monthly",
    ],
    "publisher": ["published: the plan is on the team page"],
}
"""Each agent's scripted replies (the writer's n-th reply is revision n)."""


class CrewState(TypedDict, total=False):
    """The crew's shared state."""

    topic: str
    messages: Annotated[list[AnyMessage], add_messages]
    revisions: int
    feedback: str
    published: bool


def _reply(agent: str, turn: int, state: CrewState) -> AnyMessage:
    script = SCRIPT[agent]
    model = FakeListChatModel(responses=[script[min(turn, len(script) - 1)]])
    reply = model.invoke(state.get("messages", []))
    reply.name = agent
    return reply


def start(topic: str) -> CrewState:
    """The input of a new run about ``topic``."""
    return {"topic": topic, "messages": [HumanMessage(f"write a short plan about {topic}")], "revisions": 0}


def build_crew(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The crew's graph, checkpointed by ``checkpointer``: researcher -> writer -> review (a human) ->
    writer again on a revision request, publisher once approved."""

    def researcher(state: CrewState) -> CrewState:
        return {"messages": [_reply("researcher", 0, state)]}

    def writer(state: CrewState) -> CrewState:
        return {"messages": [_reply("writer", state.get("revisions", 0), state)]}

    def review(state: CrewState) -> Command[str]:
        draft = state["messages"][-1].content
        answer = interrupt({"question": "approve the draft?", "draft": draft, "revision": state.get("revisions", 0)})
        if answer == "approve":
            return Command(goto="publisher", update={"feedback": ""})
        return Command(goto="writer", update={"feedback": str(answer), "revisions": state.get("revisions", 0) + 1})

    def publisher(state: CrewState) -> CrewState:
        return {"messages": [_reply("publisher", 0, state)], "published": True}

    builder = StateGraph(CrewState)
    builder.add_node("researcher", researcher)
    builder.add_node("writer", writer)
    builder.add_node("review", review, destinations=("writer", "publisher"))
    builder.add_node("publisher", publisher)
    builder.add_edge(START, "researcher")
    builder.add_edge("researcher", "writer")
    builder.add_edge("writer", "review")
    builder.add_edge("publisher", END)
    return builder.compile(checkpointer=checkpointer)


def main(argv: Sequence[str] | None = None) -> int:
    """Resume an interrupted crew thread (``resume``) with an answer, as another process would.

    Example:
        >>> main(["resume", "--url", url, "--namespace", "crew", "--thread", "t1"])  # doctest: +SKIP
        0
    """
    import rxstate
    from rxstate.integrations.langgraph.saver import RxCheckpointSaver

    parser = argparse.ArgumentParser(prog="python -m rxstate.integrations.langgraph.crew")
    parser.add_argument("command", choices=["resume"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--thread", required=True)
    parser.add_argument("--answer", default="approve")
    args = parser.parse_args(argv)
    with rxstate.connect(args.url, namespace=args.namespace, actor="reviewer-process") as store:
        graph = build_crew(RxCheckpointSaver(store))
        config: RunnableConfig = {"configurable": {"thread_id": args.thread}}
        pending = graph.get_state(config)
        if not pending.interrupts:
            print(f"thread {args.thread!r} is not waiting for an answer", file=sys.stderr)
            return 1
        answer: Command[Any] = Command(resume=args.answer)
        out = graph.invoke(answer, config)
        print(f"resumed {args.thread} with {args.answer!r}: published={out.get('published', False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

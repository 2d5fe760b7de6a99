"""A multi-agent LangGraph crew checkpointed in Redis/Valkey by rxstate: interrupted for a human's
review, resumed from other processes, and inspected.

    python examples/langgraph_agents.py                 # on an embedded server it starts and stops
    python examples/langgraph_agents.py --url redis://127.0.0.1:6379/0

What happens: the crew (researcher, writer, reviewer; a scripted model, no network) runs until the
reviewer asks a human to approve the draft. A second process asks for a revision, a third approves;
this process watches the thread's checkpoints arrive through rxstate's change feed while they do, then
prints the thread's history and the path from the published state back to the input. Afterwards the
same history is one command away: ``rxstate langgraph history THREAD --url URL --namespace NS``.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import rxstate
from rxstate.integrations.langgraph import RxCheckpointSaver, ThreadCheckpoint
from rxstate.integrations.langgraph.crew import build_crew, start
from rxstate.server import EmbeddedServer


@contextlib.contextmanager
def server_url(url: str | None) -> Iterator[str]:
    """The given server, or an embedded one that other processes can reach too."""
    if url:
        yield url
        return
    with EmbeddedServer() as server:
        yield server.url


def answer_from_another_process(url: str, namespace: str, thread: str, answer: str) -> None:
    """A reviewer in another process resumes the thread with its answer."""
    command = [sys.executable, "-m", "rxstate.integrations.langgraph.crew", "resume"]
    command += ["--url", url, "--namespace", namespace, "--thread", thread, "--answer", answer]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    print(f"  [other process] {done.stdout.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis/Valkey URL (default: start an embedded server)")
    args = parser.parse_args(argv)
    namespace, thread = f"crew-{uuid.uuid4().hex[:6]}", "launch-plan"
    config = {"configurable": {"thread_id": thread}}
    with server_url(args.url) as url, rxstate.connect(url, namespace=namespace, actor="coordinator") as store:
        saver = RxCheckpointSaver(store)
        graph = build_crew(saver)

        arrived: list[ThreadCheckpoint] = []
        change = threading.Condition()

        def heard(checkpoint: ThreadCheckpoint) -> None:
            with change:
                arrived.append(checkpoint)
                change.notify_all()

        watching = saver.watch(thread).subscribe(heard)

        out = graph.invoke(start("the launch plan"), config)
        question = out["__interrupt__"][0].value
        print(f"interrupted: {question['question']} -> {question['draft']!r}")

        answer_from_another_process(url, namespace, thread, "add the hiring plan")
        print(f"now waiting on: {graph.get_state(config).interrupts[0].value['draft']!r}")
        answer_from_another_process(url, namespace, thread, "approve")
        last = saver.history(thread, limit=1)[0].checkpoint_id  # the published state's checkpoint
        with change:
            if not change.wait_for(lambda: any(c.checkpoint_id == last for c in arrived), timeout=30):
                raise SystemExit("the published checkpoint never arrived on the change feed")
        watching.dispose()
        print(f"watched {len(arrived)} checkpoints arrive, the last at step {arrived[-1].step}")

        final = graph.get_state(config)
        print(f"published={final.values['published']} after {final.values['revisions']} revision(s)")
        for message in final.values["messages"]:
            print(f"  {message.type:>5} {getattr(message, 'name', '') or '':<10} {message.content}")

        print("history (newest first):")
        for c in saver.history(thread):
            print(f"  step {c.step:>2} {c.source:<6} {c.checkpoint_id}")

        path, at = [], graph.get_state(config)
        while at is not None and at.config:
            path.append(at.metadata.get("step"))
            at = graph.get_state(at.parent_config) if at.parent_config else None
        print(f"parent chain of the published state: steps {path}")
        if args.url:
            print(f"inspect it again: rxstate langgraph history {thread} --url {url} --namespace {namespace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

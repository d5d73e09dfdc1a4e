"""A tab's two Gradio endpoints, made from its one function.

A tab writes ``submission(*inputs) -> Submission``: its inputs, named and typed as the Gradio API
shows them, turned into the job's prompt, images and parameters. ``endpoints()`` makes from it
``T`` (submits, then streams ``(image, task id, status)`` with progress) and ``submit_T`` (returns
the task id at once), each with a last input of its own, ``then`` (follow-up steps as JSON text).
Both carry its signature, because Gradio reads the parameter names, defaults
and type hints of the functions it serves to build the API that gradio_client scripts call.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, TypeVar

import gradio as gr

from jobs import parameter_defaults
from ui.chain import then_of
from ui.common import Update, run, submitted

F = TypeVar("F", bound=Callable[..., Any])


class Submission(TypedDict):
    """What a tab makes of its inputs: the keyword arguments of ``ui.common.submit``."""

    images: dict[str, Any]
    parameters: dict[str, Any]
    prompt: NotRequired[str | None]


@dataclass(frozen=True)
class Endpoints:
    """A tab's ``T`` and ``submit_T``, and the default of each input (the widgets start there)."""

    task_type: str
    run: Callable[..., AsyncIterator[Update]]
    submit: Callable[..., str]
    defaults: Mapping[str, Any]
    # Each input's name → the label of the tab's widget for it, for errors in the tab's words
    # (filled when the tab wires its widgets: ``JobControls.wire``).
    labels: dict[str, str] = field(default_factory=dict)


def endpoints(task_type: str, submission: Callable[..., Submission], **page_defaults: Any) -> Endpoints:
    """The endpoints of ``task_type``'s tab. Its inputs' defaults are the job's own (the operation's
    schema, and the settings that stand in for it: ``jobs.parameter_defaults``), read now, then
    ``page_defaults``: how the page spells a default the schema leaves as None (``seed=-1``), and
    the defaults of inputs that are no parameter (an optional image). ``submission``'s docstring
    describes ``T`` in the API docs."""
    inputs = inspect.signature(submission, eval_str=True).parameters
    unknown = sorted(set(page_defaults) - set(inputs))
    if unknown:
        raise ValueError(f"{task_type}: page defaults for no input: {unknown}; the inputs are {list(inputs)}")
    defaults = {name: value for name, value in parameter_defaults(task_type).items() if name in inputs}
    defaults |= page_defaults
    params = [p.replace(default=defaults[p.name]) if p.name in defaults else p for p in inputs.values()]
    # Last, after the tab's own inputs (so scripts that pass those by position keep working): the
    # follow-up steps as JSON text, "" for none.
    params.append(inspect.Parameter("then", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="", annotation=str))
    # Gradio hands progress to the parameter whose default is a gr.Progress, positionally after the inputs.
    progress = inspect.Parameter(
        "progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress(), annotation=gr.Progress
    )
    streamed = inspect.Signature([*params, progress], return_annotation=AsyncIterator[Update])
    immediate = inspect.Signature(params, return_annotation=str)

    labels: dict[str, str] = {}

    def job(arguments: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        steps = arguments.pop("then")  # read with the rest: a bad one is "Not submitted" as well
        return lambda: {**submission(**arguments), "then": then_of(steps)}

    async def run_job(*args: Any, **kwargs: Any) -> AsyncIterator[Update]:
        arguments = _bind(streamed, args, kwargs)
        tracker = arguments.pop("progress")
        # The submission runs in a thread: a tab's may read and decode uploads (the object editor's layers).
        async for update in run(task_type, tracker, job(arguments), labels):
            yield update

    def submit_job(*args: Any, **kwargs: Any) -> str:
        return submitted(task_type, job(_bind(immediate, args, kwargs)), labels)

    article = "an" if task_type[0] in "aeiou" else "a"
    queued = f"Queue {article} {task_type.replace('_', ' ')} and return its task id at once."
    return Endpoints(
        task_type,
        _present(run_job, task_type, streamed, inspect.getdoc(submission)),
        _present(submit_job, f"submit_{task_type}", immediate, queued),
        defaults,
        labels,
    )


def _bind(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _present(fn: F, name: str, signature: inspect.Signature, doc: str | None) -> F:
    """``fn`` as Gradio, ``help()`` and ``inspect`` see it: ``name(signature)``, documented by ``doc``."""
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    fn.__signature__ = signature  # type: ignore[attr-defined]
    hints = {p.name: p.annotation for p in signature.parameters.values() if p.annotation is not p.empty}
    fn.__annotations__ = {**hints, "return": signature.return_annotation}
    return fn

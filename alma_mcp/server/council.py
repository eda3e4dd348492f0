"""The council over MCP: the prompts of ``prompts/*.md``, IPR-id completions, and ``council_review``.

``register`` loads and validates the prompt files (a bad or duplicate file stops start-up with
``ConfigError``), adds one MCP prompt per file, and adds the ``council_review`` tool.

Sampling (mcp 2.3). When sampling is on (``ALMA_COUNCIL_SAMPLING``) and the client declared the
``sampling`` capability, each role asks the client's model through ``Sample``, the resolver marker
of ``mcp.server.mcpserver``: a resolver returns ``Sample(messages, max_tokens=..., system_prompt=...)``
and the framework injects the client's ``CreateMessageResult``. It works in both protocol eras:

- handshake era (<= 2025-11-25): the framework sends ``sampling/createMessage`` mid-call over the
  session and waits for the answer;
- 2026-07-28: the call returns an ``InputRequiredResult`` batching the questions of every resolver
  that asked in that round; the client answers them (the SDK ``Client`` runs its
  ``sampling_callback``) and retries the call with the answers; answered outcomes ride the sealed
  ``request_state``, and resolver bodies run again on every round. A question must therefore
  render identically across rounds: the prompts are built from the stored revision only.

A resolver asks one question, so each role is a chain of ``MAX_ATTEMPTS`` resolvers, attempt n
depending on attempts before it: it asks again (with the error, as a repair turn) only when the
previous answer is unusable, and returns ``None`` (asks nothing) otherwise. A last resolver per
role collects the (question, answer) pairs; the tool body replays them into ``council.review``,
which runs the same steps, so the domain decides everything and stays free of MCP. The eras take up
to four rounds (three asks and the final one; the SDK client allows ten).

A resolver that returns ``None`` asks nothing, so a client without the capability, or sampling off,
never sees a request. A client that refuses a request (its callback returns ``ErrorData``) ends the
call with that ``MCPError`` in both eras, and nothing is recorded: turn sampling off for such clients.
"""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

import anyio
from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.mcpserver import Context, Resolve, Sample
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.mcpserver.prompts.base import PromptArgument
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    Completion,
    CompletionArgument,
    CreateMessageResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    TextContent,
    ToolAnnotations,
)

from alma_mcp import council
from alma_mcp.council import CouncilReport, RoleName, SamplingRequest
from alma_mcp.errors import AlmaError, ConfigError
from alma_mcp.prompts_catalog import PromptCatalog, PromptSpec
from alma_mcp.server.ipr import IprId, principal_of
from alma_mcp.server.toolkit import coded_errors
from alma_mcp.services import Services

T = TypeVar("T")

ADVISE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
MAX_COMPLETIONS = 100
IPR_TEMPLATE_URI = "alma://iprs/{ipr_id}"

Answered = list[tuple[SamplingRequest, str]]
"""One role's questions and the model's answers, in order."""

assert council.MAX_ATTEMPTS == 3, "the resolver chain below asks at most three times"


async def _off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # The store may wait on another process's write lock: never block the event loop on it.
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def sampling_enabled(services: Services) -> bool:
    """``ALMA_COUNCIL_SAMPLING``, read leniently until the setting exists."""
    return bool(getattr(services.settings, "council_sampling", False))


def register(server: MCPServer[Any], services: Services, *, sampling: bool | None = None) -> None:
    """Add the prompts and the ``council_review`` tool.

    ``sampling`` overrides ``ALMA_COUNCIL_SAMPLING`` (tests).

    Raises:
        ConfigError: a prompt file is invalid, duplicated or missing (named).
    """
    catalog = council.load_prompts(services.settings)
    for spec in catalog.specs():
        server.add_prompt(_prompt(spec, catalog, services))
    enabled = sampling_enabled(services) if sampling is None else sampling

    def prepare(ipr_id: int, ctx: Context[Any, Any]) -> dict[RoleName, str] | None:
        if not enabled:
            return None
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            return None
        try:
            subject = council.prepare(services, ipr_id, principal_of(ctx, services))
            return council.sampling_prompts(catalog, subject)
        except AlmaError:
            return None  # the tool body reports it

    prepare.__qualname__ = "council_review.prepare"  # the resolver's stable wire key
    chains = {role: _chain(role, prepare) for role in council.ROLES}

    @server.tool(name="council_review", title="Council review of an IPR", annotations=ADVISE)
    @coded_errors
    async def council_review(
        ipr_id: IprId,
        ctx: Context[Any, Any],
        architect: Annotated[Answered, Resolve(chains["architect"])],
        secops: Annotated[Answered, Resolve(chains["secops"])],
        finops: Annotated[Answered, Resolve(chains["finops"])],
    ) -> CouncilReport:
        """Review an IPR as the council: an architect (validation, single points of failure, the plan's
        risk and blast radius), SecOps (security audit, compliance) and FinOps (cost delta, budget,
        savings), then a decision by an explicit rule: a SecOps critical or high finding blocks,
        FinOps over budget flags, the architect integrates. The verdicts are recorded on the IPR as
        review comments from council:architect, council:secops and council:finops. Advisory only: it
        never approves an IPR or changes its state; a person approves."""
        answered: dict[RoleName, Answered] = {"architect": architect, "secops": secops, "finops": finops}
        sampler = _Replay(answered) if any(answered.values()) else None
        principal = principal_of(ctx, services)
        report = await _off_loop(council.review, services, ipr_id, sampler, principal=principal, catalog=catalog)
        await ctx.notify_resource_updated(f"alma://iprs/{ipr_id}")
        return report


def _prompt(spec: PromptSpec, catalog: PromptCatalog, services: Services) -> Prompt:
    async def render(ctx: Context[Any, Any], **arguments: Any) -> str:
        given = {name: str(value) for name, value in arguments.items() if value is not None}
        try:
            return await _off_loop(
                council.render_prompt, services, catalog, spec.name, given, principal_of(ctx, services)
            )
        except AlmaError as err:
            code = INTERNAL_ERROR if isinstance(err, ConfigError) else INVALID_PARAMS
            raise MCPError(code=code, message=str(err), data=err.to_payload()) from None

    return Prompt(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        arguments=[PromptArgument(name=a.name, description=a.description, required=a.required) for a in spec.arguments],
        fn=render,
        context_kwarg="ctx",
    )


def _text(result: CreateMessageResult) -> str:
    return result.content.text if isinstance(result.content, TextContent) else ""


def _sample(request: SamplingRequest) -> Sample:
    return Sample(
        [SamplingMessage(role=role, content=TextContent(type="text", text=text)) for role, text in request.messages],
        max_tokens=request.max_tokens,
        system_prompt=request.system_prompt,
        temperature=0.0,
    )


def _ask(role: RoleName, prompts: Mapping[RoleName, str] | None, results: Sequence[Any]) -> Sample | None:
    if prompts is None or any(r is None for r in results):
        return None
    request = council.sampling_step(role, prompts[role], [_text(r) for r in results])
    return None if request is None else _sample(request)


def _chain(role: RoleName, prepare: Callable[..., dict[RoleName, str] | None]) -> Callable[..., Answered]:
    """The resolvers that ask ``role``'s questions, one attempt each; returns the collector."""

    def attempt1(prompts: Annotated[dict[RoleName, str] | None, Resolve(prepare)]) -> Sample | None:
        return _ask(role, prompts, [])

    def attempt2(
        prompts: Annotated[dict[RoleName, str] | None, Resolve(prepare)],
        first: Annotated[CreateMessageResult | None, Resolve(attempt1)],
    ) -> Sample | None:
        return _ask(role, prompts, [first])

    def attempt3(
        prompts: Annotated[dict[RoleName, str] | None, Resolve(prepare)],
        first: Annotated[CreateMessageResult | None, Resolve(attempt1)],
        second: Annotated[CreateMessageResult | None, Resolve(attempt2)],
    ) -> Sample | None:
        return _ask(role, prompts, [first, second])

    def collect(
        prompts: Annotated[dict[RoleName, str] | None, Resolve(prepare)],
        first: Annotated[CreateMessageResult | None, Resolve(attempt1)],
        second: Annotated[CreateMessageResult | None, Resolve(attempt2)],
        third: Annotated[CreateMessageResult | None, Resolve(attempt3)],
    ) -> Answered:
        answered: Answered = []
        if prompts is None:
            return answered
        texts: list[str] = []
        for result in (first, second, third):
            request = council.sampling_step(role, prompts[role], texts)
            if result is None or request is None:
                break
            texts.append(_text(result))
            answered.append((request, texts[-1]))
        return answered

    for fn in (attempt1, attempt2, attempt3, collect):
        fn.__qualname__ = f"council_review.{role}.{fn.__name__}"  # stable, readable wire keys
    return collect


class _Replay:
    """A sampler that hands ``council.review`` the answers the resolvers collected, question by question."""

    def __init__(self, answered: Mapping[RoleName, Answered]) -> None:
        self._answered = answered

    def __call__(self, request: SamplingRequest) -> str | None:
        pairs = self._answered.get(request.role, [])
        if request.attempt > len(pairs):
            return None
        asked, answer = pairs[request.attempt - 1]
        return answer if asked == request else None  # the IPR changed between rounds: ask nothing stale


def complete_council(
    ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, services: Services
) -> Completion | None:
    """Recent IPR ids (newest first) for any prompt argument ``ipr_id`` and for ``alma://iprs/{ipr_id}``;
    None for everything else (the caller's other completions apply)."""
    wants = argument.name == "ipr_id" and (isinstance(ref, PromptReference) or ref.uri == IPR_TEMPLATE_URI)
    if not wants:
        return None
    typed = argument.value.strip().removeprefix("#")
    recent = [str(r.id) for r in services.iprs.iprs.page(None, MAX_COMPLETIONS + 1, None)]
    matches = [i for i in recent if i.startswith(typed)]
    more = len(recent) > MAX_COMPLETIONS
    return Completion(values=matches[:MAX_COMPLETIONS], total=None if more else len(matches), has_more=more)

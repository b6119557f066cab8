"""Response bodies, as documented in the OpenAPI schema."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WindowBody(BaseModel):
    """The fixed window an operation counted in."""

    window: str = Field(examples=["60s"], description="As the request named it.")
    start: str = Field(examples=["2026-12-04T10:15:00Z"], description="UTC, inclusive.")
    reset: str = Field(
        examples=["2026-12-04T10:16:00Z"], description="UTC: the next window starts here."
    )


class CounterBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    store: str = Field(examples=["redis"])
    id: str = Field(examples=["page-views"])
    counter: int = Field(description="The value this call's own change produced.", examples=[1])
    use_conditional_writes: bool = Field(alias="useConditionalWrites")
    window: WindowBody | None = Field(default=None, description="Only with `window`.")


class AdminBody(CounterBody):
    """200 of PUT and DELETE: the value now, and the one it replaced."""

    previous: int = Field(description="The value before this call (0 if absent).")


class ErrorBody(BaseModel):
    error: str = Field(examples=["store 'redis' is unavailable: ConnectionError"])


class CappedBody(CounterBody, ErrorBody):
    """409: the cap would be passed, nothing was written; `counter` is the current value."""


class MismatchBody(ErrorBody):
    """409 of a compare-and-set: the counter held another value; nothing was written."""

    store: str
    id: str
    counter: int = Field(description="The current value.")
    expect: int = Field(description="The value the request expected.")


class BatchResult(BaseModel):
    """One operation's outcome: its `counter`, or its `status` and `error`."""

    id: str
    counter: int | None = Field(
        default=None, description="The value it produced; on a 409, the current value."
    )
    status: int | None = Field(
        default=None,
        description="Only when it was not applied: 409 refused, 424 not applied because "
        "another operation of an atomic batch was refused, 503 outcome unknown.",
    )
    error: str | None = None
    window: WindowBody | None = None


class BatchAnswerBody(BaseModel):
    """200 of a batch: every operation's outcome, in order."""

    results: list[BatchResult]
    atomic: bool


class BatchRefusedBody(BatchAnswerBody, ErrorBody):
    """409 of an atomic batch: nothing was applied; `results` names the refusing operations."""


class UsageLimitBody(ErrorBody):
    """429: the API key used up its rate limit or its daily quota; nothing was done."""

    limit: Literal["rate", "quota"] = Field(description="Which limit was exceeded.")


class ValidationErrorBody(ErrorBody):
    detail: list[dict[str, object]] = Field(description="Every rule the request broke.")


class ReadinessBody(BaseModel):
    status: str = Field(examples=["ok"])
    stores: dict[str, str] = Field(examples=[{"sqlite": "ok", "redis": "ok"}])


class UnreadyBody(ReadinessBody, ErrorBody):
    """503 from /readyz: at least one enabled store did not answer its ping."""

"""Response bodies, as documented in the OpenAPI schema."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CounterBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    store: str = Field(examples=["redis"])
    id: str = Field(examples=["page-views"])
    counter: int = Field(description="The value this call's own increment produced.", examples=[1])
    use_conditional_writes: bool = Field(alias="useConditionalWrites")


class ErrorBody(BaseModel):
    error: str = Field(examples=["store 'redis' is unavailable: ConnectionError"])


class CappedBody(CounterBody, ErrorBody):
    """409: the cap would be passed, nothing was written; `counter` is the current value."""


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

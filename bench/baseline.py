"""What the bench's own servers share: the chat API's bodies, the prompts and the tool.

Imported by the servers that run from this folder, each in a rendered service's environment.
"""

import os
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from autogen_ext.models.openai import OpenAIChatCompletionClient

SYSTEM_PROMPT = "You are a support assistant. Use the tools to look facts up."
# The two agents of the team scenario (bench/team.py has the same).
FIRST_PROMPT = "Find the facts the user needs."
SECOND_PROMPT = "Write the reply from the facts found."


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    messages: list[Message]


class ChatReply(BaseModel):
    reply: str


def lookup_customer(customer_id: str) -> dict[str, str]:
    """Look up a customer by id."""
    return {"customer_id": customer_id, "name": "Ada Lovelace", "plan": "enterprise"}


def model_client() -> "OpenAIChatCompletionClient":
    """The AutoGen model client of (c), (d) and (ad), for the stub at `BENCH_UPSTREAM_URL`."""
    # Imported here: the passthrough (b) imports this module too, and must not load AutoGen.
    from autogen_core.models import ModelFamily, ModelInfo
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    return OpenAIChatCompletionClient(
        model="bench",
        base_url=os.environ["BENCH_UPSTREAM_URL"],
        api_key="bench",
        model_info=ModelInfo(
            vision=False,
            function_calling=True,
            json_output=False,
            family=ModelFamily.UNKNOWN,
            structured_output=False,
        ),
    )

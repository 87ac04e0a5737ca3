"""What servers (b) and (c) share: the chat API's bodies, the system prompt and the tool.

Imported by `passthrough.py` and `naive.py`, which run from this folder in the rendered
service's environment.
"""

from typing import Literal

from pydantic import BaseModel

SYSTEM_PROMPT = "You are a support assistant. Use the tools to look facts up."


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

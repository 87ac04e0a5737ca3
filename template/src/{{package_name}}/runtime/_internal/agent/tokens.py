"""Token counting that never touches the network.

`estimate` (the default) over-counts on purpose: UTF-8 bytes / 3 is above what
OpenAI's tokenizers give for English, code and most other scripts, so a history
trimmed by it fits the real budget. `tiktoken` is exact for OpenAI models but needs
its encoding file on disk (`TIKTOKEN_CACHE_DIR`), which is loaded at start-up.
"""

import math
from collections.abc import Callable

import tiktoken

from ..settings import ConfigurationError, CoreSettings

# What the chat format adds to each message (role, separators), per OpenAI's cookbook.
MESSAGE_OVERHEAD_TOKENS = 4

TokenCounter = Callable[[str], int]


def message_tokens(count: TokenCounter, text: str) -> int:
    """What one chat message of this text costs the model."""
    return count(text) + MESSAGE_OVERHEAD_TOKENS


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 3)


def build_token_counter(settings: CoreSettings) -> TokenCounter:
    if settings.token_counter == "estimate":
        return estimate_tokens
    try:
        encoding_name = tiktoken.encoding_name_for_model(settings.model_name)
    except KeyError:
        encoding_name = "o200k_base"
    try:
        encoding = tiktoken.get_encoding(encoding_name)
    except Exception as error:
        raise ConfigurationError(
            f"Invalid configuration: TOKEN_COUNTER=tiktoken needs the {encoding_name} encoding "
            "on disk; point TIKTOKEN_CACHE_DIR at a directory that holds it "
            f"(see docs/configuration.md) or use the estimate counter ({error})"
        ) from None

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count

"""The tools the agent may call. Yours to change: `copier update` never overwrites this file.

Write a function, decorate it with `@tool`, give it type hints and a docstring
(the model reads both), and add it to `TOOLS`. Return anything JSON-like, dates,
decimals, dataclasses or pydantic models; raise `ToolError` for an expected problem
the model should explain to the user. See docs/writing-tools.md.
"""

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from .runtime import ToolError, tool

# Stands in for your customer database or API.
_CUSTOMERS = {
    "C-1001": {
        "name": "Ada Lovelace",
        "plan": "enterprise",
        "monthly_fee": Decimal("1250.00"),
        "customer_since": datetime(2019, 3, 14, 9, 30, tzinfo=UTC),
    },
    "C-1002": {
        "name": "Alan Turing",
        "plan": "starter",
        "monthly_fee": Decimal("49.00"),
        "customer_since": datetime(2023, 11, 2, 16, 5, tzinfo=UTC),
    },
}

_CURRENCY_MARKS = {"$": "USD", "USD": "USD", "€": "EUR", "EUR": "EUR", "£": "GBP", "GBP": "GBP"}


@tool
async def lookup_customer(customer_id: str) -> dict[str, object]:
    """Look up a customer by id (like C-1001): name, plan, monthly fee and signup time."""
    customer = _CUSTOMERS.get(customer_id.strip().upper())
    if customer is None:
        raise ToolError(f"There is no customer with id {customer_id!r}.", type="not_found")
    return {"customer_id": customer_id.strip().upper(), **customer}


@tool
def parse_claim_amount(text: str | None) -> dict[str, object]:
    """Read the money amount of a claim from free text such as "$100", "1,250.50" or "EUR 30"."""
    if text is None or not text.strip():
        raise ToolError("The claim has no amount.", type="missing_amount")
    currency = next((code for mark, code in _CURRENCY_MARKS.items() if mark in text.upper()), None)
    digits = re.sub(r"[^0-9.\-]", "", text.replace(",", ""))
    try:
        amount = Decimal(digits)
    except InvalidOperation:
        raise ToolError(f"No amount can be read from {text!r}.", type="invalid_amount") from None
    if not amount.is_finite() or amount <= 0:
        raise ToolError(f"The amount in {text!r} is not a positive number.", type="invalid_amount")
    return {"amount": amount, "currency": currency}


TOOLS = [lookup_customer, parse_claim_amount]

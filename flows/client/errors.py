"""What the client side raises about a workflow definition."""

from __future__ import annotations


class DefinitionError(ValueError):
    """The workflow definition is wrong; the message names the step, port or key at fault."""

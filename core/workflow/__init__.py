"""Hand-off of accepted cases to the workflow (built-in state machine or an external platform)."""

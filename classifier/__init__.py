"""Case-type and department suggestions from the citizen's text."""

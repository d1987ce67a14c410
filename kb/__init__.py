"""Knowledge base: case-type taxonomy, departments and routing, time limits, consultation articles."""

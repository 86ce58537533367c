"""The energy loop's scenario schema and escalation policy."""

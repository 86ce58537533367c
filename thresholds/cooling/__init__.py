"""The cooling loop's scenario schema, environment settings and escalation policy."""

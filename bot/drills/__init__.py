"""Drills: rehearsals of a runbook against a partner's drill target with injected faults."""

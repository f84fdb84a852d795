"""Consultation: templated opinion requests between agencies, with deadlines and escalation."""

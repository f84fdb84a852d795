"""Plumbing every service uses once: settings, clock, calendar, database, outbox, inbox,
timers, broker, logging, metrics and the service assembly."""

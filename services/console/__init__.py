"""The operator console: read models fed by every topic, a JSON API and pages."""

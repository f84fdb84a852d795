"""Notification: renders forms and messages from templates and delivers them."""

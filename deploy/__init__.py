"""Deployment: embedded infrastructure for development and tests, and the dev launcher."""

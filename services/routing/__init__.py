"""Routing: sends a dossier to its lead agency and names the agencies to consult."""

"""Intake: the one-stop desk. Receives dossiers, issues codes and Forms 01-03."""

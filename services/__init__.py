"""The four Liên thông services and their shared runtime."""

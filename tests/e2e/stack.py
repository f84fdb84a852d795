"""Re-export: the process stack lives in deploy.local."""

from deploy.local import ServiceStack as Stack

__all__ = ["Stack"]

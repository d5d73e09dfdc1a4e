"""The studio page. Talks to the job client only: never imports torch or the engines."""

from ui.app import build_ui

__all__ = ["build_ui"]

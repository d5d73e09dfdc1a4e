"""The studio page. Talks to the job client only: never imports torch or the engines."""

from ui.app import CSS, THEME, build_ui

__all__ = ["CSS", "THEME", "build_ui"]
